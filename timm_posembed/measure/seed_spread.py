""" Comparing rows trained with several random seeds: mean ± sample standard deviation, and whether a difference
lies outside the seed-to-seed spread.

A difference Δ = mean − baseline mean is *outside the spread* when |Δ| > std + baseline std, i.e. the two rows'
mean ± std intervals do not overlap, and *inside* otherwise; it needs at least two runs in both rows (with one run
there is no spread to compare with). This is a deliberately plain rule, not a significance test: with three seeds a
difference outside it is worth a longer run, one inside it is not evidence either way. ``timm-posembed report``, the
demo and the studies in this package all judge by it.
"""
import math
import statistics
from typing import Optional, Sequence, Tuple

__all__ = ['mean_std', 'spread_verdict']


def mean_std(values: Sequence[float]) -> Tuple[Optional[float], Optional[float]]:
    """(mean, sample std) of the finite ``values``; std is None for fewer than two, both None for none."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return None, None
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else None


def spread_verdict(values: Sequence[float], baseline_values: Sequence[float]) -> Optional[str]:
    """``'outside'`` / ``'inside'`` the spread for two sets of runs' results (see the module docstring for the
    rule), or None when either has fewer than two finite values."""
    values = [v for v in values if not math.isnan(v)]
    baseline_values = [v for v in baseline_values if not math.isnan(v)]
    if len(values) < 2 or len(baseline_values) < 2:
        return None
    delta = statistics.fmean(values) - statistics.fmean(baseline_values)
    return 'outside' if abs(delta) > statistics.stdev(values) + statistics.stdev(baseline_values) else 'inside'
