"""Line searches: KL-constrained backtracking (TRPO), Armijo and strong Wolfe."""

from natrl.linesearch.backtracking import BacktrackingResult, backtracking
from natrl.linesearch.wolfe import LineSearchResult, armijo, strong_wolfe

__all__ = ["BacktrackingResult", "LineSearchResult", "armijo", "backtracking", "strong_wolfe"]
