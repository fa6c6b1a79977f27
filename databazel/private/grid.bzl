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

def _hex32(n):
    """Formats the low 32 bits of an int as 8 lowercase hex digits."""
    if n < 0:
        n = n + 4294967296
    digits = []
    for _ in range(8):
        digits.append(_HEX[n % 16])
        n = n // 16
    return "".join(reversed(digits))

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

def value_to_name(value):
    """Turns a hyperparameter value into a readable, valid piece of a target name.

    Values made only of letters, digits and `._+-` (and at most
    MAX_VALUE_CHARS_IN_NAME long) are kept verbatim. Any other value keeps its
    allowed characters (others become `_`), is cut to MAX_VALUE_CHARS_IN_NAME
    characters and gets `_h` plus a hash of the full value appended, so two
    different values never share a name piece except by a 32-bit hash collision
    (which `expand_grid` detects).

    Args:
      value: the value, a string.

    Returns:
      A non-empty string of characters from `[A-Za-z0-9._+-]`.
    """
    kept = "".join([c if c in _NAME_CHARS.elems() else "_" for c in value.elems()])
    if kept == value and value and len(value) <= MAX_VALUE_CHARS_IN_NAME and value not in (".", ".."):
        return value
    return "{}_h{}".format(kept[:MAX_VALUE_CHARS_IN_NAME], _hex32(hash(value)))

def trial_name(prefix, combination):
    """The target name of one trial.

    Args:
      prefix: the search's name.
      combination: list of (name, value) pairs, in grid order.

    Returns:
      `prefix__name1-value1__name2-value2...`, with values through `value_to_name`.
    """
    return "__".join([prefix] + ["{}-{}".format(k, value_to_name(v)) for k, v in combination])

def validate_grid(where, grid, fixed_hyperparams = {}):
    """Fails with a message naming `where` if `grid` is not a usable grid.

    Args:
      where: the search's label, for error messages.
      grid: dict from hyperparameter name to a non-empty list of string values.
      fixed_hyperparams: dict of hyperparameters every trial gets; must not overlap the grid.
    """
    if type(grid) != "dict" or not grid:
        fail("{}: `grid` must be a non-empty dict from hyperparameter name to a list of string values, got {}".format(where, repr(grid)))
    for key, values in grid.items():
        if not is_identifier(key):
            fail("{}: grid key {} is not a valid hyperparameter name: use letters, digits and `_`, not starting with a digit".format(where, repr(key)))
        if type(values) != "list" or not values:
            fail("{}: grid[{}] must be a non-empty list of strings, got {}".format(where, repr(key), repr(values)))
        seen = {}
        for v in values:
            if type(v) != "string":
                fail("{}: grid[{}] holds {} ({}); hyperparameter values must be strings: write {}".format(where, repr(key), repr(v), type(v), repr(str(v))))
            if v in seen:
                fail("{}: grid[{}] lists the value {} twice".format(where, repr(key), repr(v)))
            seen[v] = True
        if key in fixed_hyperparams:
            fail("{}: {} is both in `grid` and in `hyperparams`; keep it in one of them".format(where, repr(key)))
    for key, value in fixed_hyperparams.items():
        if not is_identifier(key):
            fail("{}: hyperparams key {} is not a valid hyperparameter name".format(where, repr(key)))
        if type(value) != "string":
            fail("{}: hyperparams[{}] is {} ({}); hyperparameter values must be strings".format(where, repr(key), repr(value), type(value)))

def expand_grid(where, prefix, grid, fixed_hyperparams = {}):
    """Expands a grid into its cartesian product of trials.

    The first grid key varies slowest. Each trial's name depends only on its own
    values, so adding a value to the grid adds trials without renaming the
    existing ones (and Bazel re-uses their results).

    Args:
      where: the search's label, for error messages.
      prefix: the search's name; every trial name starts with it.
      grid: dict from hyperparameter name to a non-empty list of string values.
      fixed_hyperparams: hyperparameters every trial gets in addition.

    Returns:
      A list of structs with `name` (the trial's target name) and
      `hyperparams` (dict: fixed hyperparameters, then grid values in grid order).
    """
    validate_grid(where, grid, fixed_hyperparams)
    combinations = [[]]
    for key, values in grid.items():
        combinations = [c + [(key, v)] for c in combinations for v in values]

    trials = []
    names = {}
    for combination in combinations:
        name = trial_name(prefix, combination)
        if name in names:
            fail("{}: the trials {} and {} would share the target name {}; change one of the values".format(where, names[name], combination, name))
        names[name] = combination
        hyperparams = dict(fixed_hyperparams)
        hyperparams.update({k: v for k, v in combination})
        trials.append(struct(name = name, hyperparams = hyperparams))
    return trials
