"""Early-stopping schedules: successive halving and Hyperband, as load-time arithmetic.

`successive_halving(...)` and `hyperband(...)` make the value of
`hyperparam_search(early_stopping = ...)`; `brackets` turns one into the
brackets of successive halving the search builds. Nothing here creates
targets, so all of it is unit-tested with skylib's `unittest`
(tests/starlark/early_stopping_test.bzl).

Successive halving (Jamieson and Talwalkar, 2016) with budgets in epochs: the
rungs are at `min_epochs`, `min_epochs * eta`, `min_epochs * eta^2`, ... and
at `max_epochs`; at each rung the best `max(1, n // eta)` of the `n` trials
that reached it are promoted to the next one. Hyperband (Li et al., 2018)
runs several brackets of it: bracket `s` (from `s_max` down to 0, where
`s_max` is the largest `s` with `min_epochs * eta^s <= max_epochs`) starts
`ceil((s_max + 1) * eta^s / (s + 1))` trials and has its rungs at
`max_epochs // eta^(s - i)` epochs for `i` = 0 to `s`.
"""

_KIND = "_databazel_early_stopping"

def successive_halving(max_epochs, min_epochs = 1, eta = 3):
    """Successive halving: stop the worse trials at each rung, train the rest further.

    Every trial trains `min_epochs` epochs and is evaluated; the best
    `1 / eta` of them train on to `min_epochs * eta` epochs and are evaluated
    again, and so on up to `max_epochs`. For 9 trials, `min_epochs = 1`,
    `max_epochs = 9`, `eta = 3`: 9 trials train 1 epoch, 3 train to 3, 1 trains
    to 9: 21 epochs instead of 81.

    Args:
      max_epochs: the epochs of a trial that reaches the last rung.
      min_epochs: the epochs every trial trains before the first rung.
      eta: the reduction factor (an int, at least 2): a rung promotes the best 1 / eta of its trials.

    Returns:
      A value for `hyperparam_search(early_stopping = ...)`.
    """
    return struct(_databazel_early_stopping = "successive_halving", min_epochs = min_epochs, max_epochs = max_epochs, eta = eta)

def hyperband(max_epochs, min_epochs = 1, eta = 3):
    """Hyperband: several brackets of successive halving, from many short trials to few long ones.

    Bracket `s` starts `ceil((s_max + 1) * eta^s / (s + 1))` trials at
    `max_epochs // eta^s` epochs (Li et al., 2018); the search's trials are
    shared among the brackets in that proportion, in order. For
    `min_epochs = 1`, `max_epochs = 27`, `eta = 3`: brackets of 27, 12, 6 and 4
    trials starting at 1, 3, 9 and 27 epochs; a random search without
    `num_trials` draws those 49 trials.

    Args:
      max_epochs: the epochs of a trial that reaches the last rung of its bracket.
      min_epochs: the fewest epochs a trial trains (the first rung of the most exploratory bracket).
      eta: the reduction factor (an int, at least 2).

    Returns:
      A value for `hyperparam_search(early_stopping = ...)`.
    """
    return struct(_databazel_early_stopping = "hyperband", min_epochs = min_epochs, max_epochs = max_epochs, eta = eta)

def _is_positive_int(value):
    return type(value) == "int" and value >= 1

def check_early_stopping(where, early_stopping):
    """Fails naming `where` unless `early_stopping` is a valid schedule.

    Args:
      where: the search's label, for error messages.
      early_stopping: the value of `hyperparam_search(early_stopping = ...)`.
    """
    if type(early_stopping) != "struct" or not hasattr(early_stopping, _KIND):
        fail("{}: `early_stopping` must be successive_halving(...) or hyperband(...) from @databazel//databazel:defs.bzl, got {}".format(where, repr(early_stopping)))
    kind = getattr(early_stopping, _KIND)
    for arg in ("min_epochs", "max_epochs"):
        value = getattr(early_stopping, arg)
        if not _is_positive_int(value):
            fail("{}: {}(`{}` = {}): must be a positive int (a number of epochs)".format(where, kind, arg, repr(value)))
    if early_stopping.max_epochs < early_stopping.min_epochs:
        fail("{}: {}: `max_epochs` = {} is less than `min_epochs` = {}".format(where, kind, early_stopping.max_epochs, early_stopping.min_epochs))
    if type(early_stopping.eta) != "int" or early_stopping.eta < 2:
        fail("{}: {}(`eta` = {}): the reduction factor must be an int of at least 2".format(where, kind, repr(early_stopping.eta)))

def kind(early_stopping):
    """`successive_halving` or `hyperband`."""
    return getattr(early_stopping, _KIND)

def rung_epochs(min_epochs, max_epochs, eta):
    """The epochs of the rungs of one bracket: min_epochs * eta^i below max_epochs, then max_epochs.

    Args:
      min_epochs: the first rung's epochs.
      max_epochs: the last rung's epochs.
      eta: the reduction factor.

    Returns:
      A strictly increasing list of ints ending in `max_epochs`.
    """
    rungs = []
    epochs = min_epochs
    for _ in range(max_epochs):
        if epochs >= max_epochs:
            break
        rungs.append(epochs)
        epochs *= eta
    return rungs + [max_epochs]

def _hyperband_brackets(min_epochs, max_epochs, eta):
    """[(s, trials the bracket asks for, its rungs' epochs)], bracket s_max first."""
    s_max = 0
    for _ in range(max_epochs):
        if min_epochs * eta * _power(eta, s_max) > max_epochs:
            break
        s_max += 1
    brackets = []
    for s in range(s_max, -1, -1):
        wanted = ((s_max + 1) * _power(eta, s) + s) // (s + 1)
        brackets.append((s, wanted, [max_epochs // _power(eta, s - i) for i in range(s + 1)]))
    return brackets

def _sum(values):
    total = 0
    for value in values:
        total += value
    return total

def _power(base, exponent):
    result = 1
    for _ in range(exponent):
        result *= base
    return result

def default_num_trials(early_stopping):
    """The trials a schedule asks for: Hyperband's total; None for successive halving."""
    if kind(early_stopping) != "hyperband":
        return None
    return _sum([wanted for _, wanted, _ in _hyperband_brackets(early_stopping.min_epochs, early_stopping.max_epochs, early_stopping.eta)])

def brackets(where, early_stopping, num_trials):
    """The brackets of successive halving a search with `num_trials` trials runs.

    Successive halving is one bracket of every trial. Hyperband's brackets
    share the trials, in order, in proportion to the trials each asks for
    (largest remainders, ties to the earlier bracket).

    Args:
      where: the search's label, for error messages.
      early_stopping: a checked schedule.
      num_trials: how many trials the search has.

    Returns:
      A list of struct(index: the bracket's `s` for Hyperband or None,
      start: its first trial's position, size: its number of trials,
      rungs: the epochs of its rungs, `max_epochs` last).
    """
    es = early_stopping
    if kind(es) == "successive_halving":
        return [struct(index = None, start = 0, size = num_trials, rungs = rung_epochs(es.min_epochs, es.max_epochs, es.eta))]
    plan = _hyperband_brackets(es.min_epochs, es.max_epochs, es.eta)
    if num_trials < len(plan):
        fail("{}: hyperband(min_epochs = {}, max_epochs = {}, eta = {}) has {} brackets, so it needs at least {} trials; the search has {}".format(
            where,
            es.min_epochs,
            es.max_epochs,
            es.eta,
            len(plan),
            len(plan),
            num_trials,
        ))
    total = _sum([wanted for _, wanted, _ in plan])

    # Largest remainders: floor shares first, then one more to the brackets
    # with the largest remainders (ties to the earlier bracket).
    sizes = [num_trials * wanted // total for _, wanted, _ in plan]
    remainders = sorted([(-(num_trials * wanted % total), i) for i, (_, wanted, _) in enumerate(plan)])
    for _, i in remainders[:num_trials - _sum(sizes)]:
        sizes[i] += 1

    # Every bracket runs at least one trial: take it from the largest.
    for i in range(len(sizes)):
        if sizes[i] == 0:
            largest = sorted([(-size, j) for j, size in enumerate(sizes)])[0][1]
            sizes[largest] -= 1
            sizes[i] = 1
    result = []
    start = 0
    for (s, _, rungs), size in zip(plan, sizes):
        result.append(struct(index = s, start = start, size = size, rungs = rungs))
        start += size
    return result
