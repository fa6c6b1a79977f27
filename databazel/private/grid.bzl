"""Pure functions behind `hyperparam_search`: validating a grid, expanding it, naming trials.

Nothing here creates targets, so all of it is unit-tested with skylib's `unittest`.
"""

# Characters kept as they are in a target name derived from a value; any other
# character makes the value "lossy" and earns it a hash suffix.
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-"
_IDENT_START = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
_IDENT_CHARS = _IDENT_START + "0123456789"
_HEX = "0123456789abcdef"

# Values longer than this are shortened (with a hash suffix) in target names.
MAX_VALUE_CHARS_IN_NAME = 40

# Trial names longer than this are cut and end in a hash of the full name, so
# that every file a trial writes (`<trial>__eval.metrics.json`, ...) stays well
# inside the 255-byte limit of a file name.
MAX_TRIAL_NAME_LENGTH = 200

# A search expands to at most this many trials unless its `max_trials` says
# otherwise: a stray value that multiplies the grid fails at load time instead
# of starting thousands of trainings.
DEFAULT_MAX_TRIALS = 1000

def _hex32(n):
    """Formats the low 32 bits of an int as 8 lowercase hex digits."""
    if n < 0:
        n = n + 4294967296
    digits = []
    for _ in range(8):
        digits.append(_HEX[n % 16])
        n = n // 16
    return "".join(reversed(digits))

def _hash64(s):
    """16 hex digits: two 32-bit string hashes, of `s` and of `s` reversed.

    Starlark's `hash` of a string is the same on every machine, so names built
    from it are too.
    """
    return _hex32(hash(s)) + _hex32(hash(s[::-1]))

def _has_hash_suffix(s):
    """Whether `s` ends like a shortened name piece: `_h` and 16 hex digits."""
    if len(s) < 18 or s[-18:-16] != "_h":
        return False
    for c in s[-16:].elems():
        if c not in _HEX.elems():
            return False
    return True

def is_identifier(s):
    """Whether `s` is a non-empty identifier.

    Args:
      s: any value.

    Returns:
      True for a string made of a letter or `_`, then letters, digits or `_`.
    """
    if type(s) != "string" or not s:
        return False
    if s[0] not in _IDENT_START.elems():
        return False
    for c in s.elems():
        if c not in _IDENT_CHARS.elems():
            return False
    return True

def _is_verbatim(value):
    """Whether a value can appear in a target name as it is."""
    if not value or len(value) > MAX_VALUE_CHARS_IN_NAME or value in (".", ".."):
        return False
    for c in value.elems():
        if c not in _NAME_CHARS.elems():
            return False

    # `__` separates the parts of a trial name, and `_h<hex>` marks a shortened
    # value: a value holding either is shortened too, so names stay unambiguous.
    return "__" not in value and not value.endswith("_") and not _has_hash_suffix(value)

def value_to_name(value):
    """Turns a hyperparameter value into a readable, valid piece of a target name.

    Values made only of letters, digits and `._+-` (at most
    MAX_VALUE_CHARS_IN_NAME long, without `__` and not ending in `_`) are kept
    verbatim. Any other value keeps its allowed characters (others become
    `_`, and runs of `_` one `_`), is cut to MAX_VALUE_CHARS_IN_NAME characters and gets `_h`
    plus a 64-bit hash of the full value (16 hex digits) appended.

    Two different values never share a piece except by a 64-bit hash collision
    (which `expand_grid` detects): verbatim pieces never end like a hash suffix,
    and no piece contains `__`, so a trial name can also be split back into its
    pieces unambiguously.

    Args:
      value: the value, a string.

    Returns:
      A non-empty string of characters from `[A-Za-z0-9._+-]`.
    """
    if _is_verbatim(value):
        return value
    kept = []
    for c in value.elems():
        if c not in _NAME_CHARS.elems():
            c = "_"
        if c != "_" or not kept or kept[-1] != "_":
            kept.append(c)
    short = "".join(kept)[:MAX_VALUE_CHARS_IN_NAME]
    for _ in range(len(short)):
        if not short.endswith("_"):
            break
        short = short[:-1]
    return "{}_h{}".format(short, _hash64(value))

def trial_name(prefix, combination):
    """The target name of one trial.

    Args:
      prefix: the search's name.
      combination: list of (name, value) pairs, in grid order.

    Returns:
      `prefix__name1-value1__name2-value2...`, with values through
      `value_to_name`; when that is longer than MAX_TRIAL_NAME_LENGTH, its
      beginning followed by `__h` and a hash of the whole.
    """
    name = "__".join([prefix] + ["{}-{}".format(k, value_to_name(v)) for k, v in combination])
    if len(name) <= MAX_TRIAL_NAME_LENGTH:
        return name

    # Long names end in `__h<hex>`; short ones in `-<piece>`: they never meet.
    return "{}__h{}".format(name[:MAX_TRIAL_NAME_LENGTH - 19], _hash64(name))

def grid_size(grid):
    """The number of trials of a grid: the product of its value counts.

    Args:
      grid: dict from hyperparameter name to a list of values.

    Returns:
      An int.
    """
    size = 1
    for values in grid.values():
        size = size * len(values)
    return size

def validate_values(where, what, values):
    """Fails naming `where` and `what` unless `values` is a non-empty list of distinct strings.

    Args:
      where: the search's label, for error messages.
      what: how the list reads in messages, such as `grid["C"]`.
      values: the list of hyperparameter values.
    """
    if type(values) != "list" or not values:
        fail("{}: {} must be a non-empty list of strings, got {}".format(where, what, repr(values)))
    seen = {}
    for v in values:
        if type(v) != "string":
            fail("{}: {} holds {} ({}); hyperparameter values must be strings: write {}".format(where, what, repr(v), type(v), repr(str(v))))
        if v in seen:
            fail("{}: {} lists the value {} twice".format(where, what, repr(v)))
        seen[v] = True

# Words databazel names the targets of a search with besides its trials
# (`<search>__rung-0`, `<search>__bracket-1__rung-0`, `<search>__round-1__trial-0`):
# a searched hyperparameter of one of these names could make a trial's name one of theirs.
RESERVED_NAMES = ["bracket", "round", "rung", "trial"]

def validate_names(where, what, searched, fixed_hyperparams):
    """Fails naming `where` unless the searched names and the fixed hyperparameters are usable.

    Args:
      where: the search's label, for error messages.
      what: the argument holding the searched names, `grid` or `search_space`.
      searched: dict whose keys are the searched hyperparameter names.
      fixed_hyperparams: dict of hyperparameters every trial gets; must not overlap `searched`.
    """
    if type(fixed_hyperparams) != "dict":
        fail("{}: `hyperparams` must be a dict from hyperparameter name to string value, got {}".format(where, repr(fixed_hyperparams)))
    for key in searched:
        if not is_identifier(key):
            fail("{}: {} key {} is not a valid hyperparameter name: use letters, digits and `_`, not starting with a digit".format(where, what, repr(key)))
        if key in RESERVED_NAMES:
            fail("{}: {} key {} is a word databazel names its own targets of a search with ({}): rename the hyperparameter, such as {}".format(
                where,
                what,
                repr(key),
                ", ".join(RESERVED_NAMES),
                repr(key + "s"),
            ))
        if key in fixed_hyperparams:
            fail("{}: {} is both in `{}` and in `hyperparams`; keep it in one of them".format(where, repr(key), what))
    for key, value in fixed_hyperparams.items():
        if not is_identifier(key):
            fail("{}: hyperparams key {} is not a valid hyperparameter name: use letters, digits and `_`, not starting with a digit".format(where, repr(key)))
        if type(value) != "string":
            fail("{}: hyperparams[{}] is {} ({}); hyperparameter values must be strings: write {}".format(where, repr(key), repr(value), type(value), repr(str(value))))

def validate_grid(where, grid, fixed_hyperparams = {}, max_trials = DEFAULT_MAX_TRIALS):
    """Fails with a message naming `where` if `grid` is not a usable grid.

    Args:
      where: the search's label, for error messages.
      grid: dict from hyperparameter name to a non-empty list of string values.
      fixed_hyperparams: dict of hyperparameters every trial gets; must not overlap the grid.
      max_trials: the largest number of trials allowed.
    """
    if type(grid) != "dict" or not grid:
        fail("{}: `grid` must be a non-empty dict from hyperparameter name to a list of string values, got {}".format(where, repr(grid)))
    validate_names(where, "grid", grid, fixed_hyperparams)
    for key, values in grid.items():
        validate_values(where, "grid[{}]".format(repr(key)), values)
    size = grid_size(grid)
    if size > max_trials:
        fail("{}: the grid has {} trials ({}), more than max_trials = {}; remove values, or raise `max_trials` if you mean it".format(
            where,
            size,
            " x ".join(["{} {}".format(len(v), k) for k, v in grid.items()]),
            max_trials,
        ))

def expand_grid(where, prefix, grid, fixed_hyperparams = {}, max_trials = DEFAULT_MAX_TRIALS):
    """Expands a grid into its cartesian product of trials.

    The first grid key varies slowest. Each trial's name depends only on its own
    values, so adding a value to the grid adds trials without renaming the
    existing ones (and Bazel re-uses their results).

    Args:
      where: the search's label, for error messages.
      prefix: the search's name; every trial name starts with it.
      grid: dict from hyperparameter name to a non-empty list of string values.
      fixed_hyperparams: hyperparameters every trial gets in addition.
      max_trials: the largest number of trials allowed (see `validate_grid`).

    Returns:
      A list of structs with `name` (the trial's target name) and
      `hyperparams` (dict: fixed hyperparameters, then grid values in grid order).
    """
    validate_grid(where, grid, fixed_hyperparams, max_trials)
    combinations = [[]]
    for key, values in grid.items():
        combinations = [c + [(key, v)] for c in combinations for v in values]

    trials = []
    names = {}
    for combination in combinations:
        name = trial_name(prefix, combination)
        if name in names:
            fail("{}: the trials {} and {} would share the target name {} (a hash collision); change one of the values".format(where, names[name], combination, name))
        names[name] = combination
        hyperparams = dict(fixed_hyperparams)
        hyperparams.update({k: v for k, v in combination})
        trials.append(struct(name = name, hyperparams = hyperparams))
    return trials
