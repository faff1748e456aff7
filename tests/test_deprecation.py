"""Old argument and function names keep working, with a DeprecationWarning naming the new name."""

import pytest

from jaxbayes._deprecation import renamed_arguments, renamed_function


@renamed_arguments(threshold="tol", maxiter="max_iterations")
def solve(x, *, tol=1e-3, max_iterations=10):
    return x, tol, max_iterations


def test_old_argument_names_map_to_new_ones_with_a_warning():
    with pytest.warns(DeprecationWarning, match="'threshold' was renamed 'tol'"):
        assert solve(1, threshold=1e-6) == (1, 1e-6, 10)
    assert solve(1, tol=1e-5, max_iterations=3) == (1, 1e-5, 3)
    with pytest.raises(TypeError, match="both 'threshold' and its new name 'tol'"):
        solve(1, threshold=1e-6, tol=1e-5)


def test_old_function_name_warns_and_forwards():
    old = renamed_function(solve, "old_solve")
    with pytest.warns(DeprecationWarning, match=r"old_solve\(\) was renamed solve\(\)"):
        assert old(2) == (2, 1e-3, 10)
    assert old.__name__ == "old_solve"
