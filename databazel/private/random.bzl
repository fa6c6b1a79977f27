"""Random search: the search-space constructors and a deterministic sampler.

Everything is computed at load time with integer arithmetic, so the same seed
gives the same trials on every machine and with every Bazel version:

* the random numbers come from SplitMix64, computed on Starlark's
  arbitrary-precision ints with explicit 64-bit masking;
* the draw for trial `i` and hyperparameter `key` depends only on the seed, `i`
  and `key`, so growing `num_trials` keeps the earlier trials unchanged;
* bounds are read as exact decimals (`0.1` is 1 * 10^-1, not a binary float),
  logarithms and exponentials are fixed-point series with 30 decimal digits,
  and values are rendered to decimal strings here, not by float formatting.

Nothing here creates targets, so all of it is unit-tested with skylib's `unittest`.
"""

load(":grid.bzl", "trial_name", "validate_names", "validate_values")

_M64 = (1 << 64) - 1

# Draws are 53-bit integers u; a draw stands for the fraction u / 2^53 in [0, 1).
_DRAW_BITS = 53
_DRAW_RANGE = 1 << _DRAW_BITS

# Continuous values are rounded to this many significant digits: of the value
# for `loguniform`, of the range (`high - low`) for `uniform`.
SIGNIFICANT_DIGITS = 4

def _pow10(e):
    """10^e for an int e >= 0 (Starlark in Bazel 4.2 has no `**`)."""
    return int("1" + "0" * e)

# Fixed-point scale of the logarithm and exponential series.
_SCALE = _pow10(30)

# A random search gives up when this many draws per requested trial produced
# no new trial (a small discrete search space sampled many times).
_MAX_DRAWS_PER_TRIAL = 100

_DISTRIBUTION = "_databazel_distribution"

def uniform(low, high):
    """A continuous hyperparameter, uniform between `low` and `high`.

    Values are rounded to SIGNIFICANT_DIGITS significant digits of the range
    `high - low` (for `uniform(0, 1)`: steps of 0.001) and passed as decimal
    strings such as `"0.7234"`.

    Args:
      low: lower bound: an int, a float or a decimal string such as `"0.5"` or `"1e-3"`.
      high: upper bound, larger than `low`.

    Returns:
      A search-space entry for `hyperparam_search(strategy = "random", search_space = {...})`.
    """
    return struct(_databazel_distribution = "uniform", low = low, high = high)

def loguniform(low, high):
    """A continuous hyperparameter whose logarithm is uniform between log(`low`) and log(`high`).

    Use it for scales such as learning rates or regularisation strengths.
    Values are rounded to SIGNIFICANT_DIGITS significant digits and passed as
    decimal strings such as `"0.01234"` or `"1.234e-07"`.

    Args:
      low: lower bound, larger than 0: an int, a float or a decimal string.
      high: upper bound, larger than `low`.

    Returns:
      A search-space entry for `hyperparam_search(strategy = "random", search_space = {...})`.
    """
    return struct(_databazel_distribution = "loguniform", low = low, high = high)

def randint(low, high):
    """An integer hyperparameter, uniform over `low`, `low + 1`, ..., `high` (both included).

    Args:
      low: the smallest value, an int.
      high: the largest value, an int not smaller than `low`.

    Returns:
      A search-space entry for `hyperparam_search(strategy = "random", search_space = {...})`.
    """
    return struct(_databazel_distribution = "randint", low = low, high = high)

# ---------------------------------------------------------------------------
# Pseudo-random numbers

def mix64(z):
    """SplitMix64's finaliser: a bijective 64-bit mix of `z` (masked to 64 bits).

    Args:
      z: an int.

    Returns:
      An int in [0, 2^64).
    """
    z = (z + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)

def draw(seed, index, key):
    """The random draw of hyperparameter `key` in draw number `index` of a search.

    Args:
      seed: the search's seed, an int.
      index: the draw's number, 0, 1, ...
      key: the hyperparameter's name. Its `hash()` is Java's String.hashCode,
        the same on every machine.

    Returns:
      An int in [0, 2^53); it stands for the fraction u / 2^53.
    """
    z = mix64(mix64(mix64(seed & _M64) ^ index) ^ (hash(key) & 0xFFFFFFFF))
    return z >> (64 - _DRAW_BITS)

# ---------------------------------------------------------------------------
# Exact decimals: a number is a pair (n, k) meaning n * 10^k.

_DIGITS = "0123456789"

def _parse_digits(s):
    """The int of a non-empty string of ASCII digits, or None."""
    if not s:
        return None
    for c in s.elems():
        if c not in _DIGITS.elems():
            return None
    return int(s)

def parse_decimal(value):
    """Reads a bound exactly as a decimal.

    Args:
      value: an int, a float (read through its shortest representation, so
        `0.1` is exactly one tenth) or a string such as `"-2.5"`, `"1e-3"`.

    Returns:
      (n, k) with value == n * 10^k, or None if `value` is not a finite number.
    """
    if type(value) == "bool":
        return None
    if type(value) == "int":
        return (value, 0)
    if type(value) == "float":
        text = str(value)
    elif type(value) == "string":
        text = value.strip().lower()
    else:
        return None
    sign = 1
    if text.startswith("-") or text.startswith("+"):
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    mantissa, e, exponent_text = text.partition("e")
    exponent = 0
    if e:
        exp_sign = 1
        if exponent_text.startswith("-") or exponent_text.startswith("+"):
            exp_sign = -1 if exponent_text[0] == "-" else 1
            exponent_text = exponent_text[1:]
        parsed = _parse_digits(exponent_text)
        if parsed == None:
            return None
        exponent = exp_sign * parsed
    whole, _, fraction = mantissa.partition(".")
    if not whole and not fraction:
        return None
    n = _parse_digits(whole + fraction)
    if n == None:
        return None
    return (sign * n, exponent - len(fraction))

def _abs(n):
    """|n| (Starlark in Bazel 4.2 has no `abs`)."""
    return -n if n < 0 else n

def _normalize(d):
    """(n, k) with trailing zeros of n moved into k; zero is (0, 0)."""
    n, k = d
    if n == 0:
        return (0, 0)
    for _ in range(len(str(_abs(n)))):
        if n % 10 != 0:
            break
        n = n // 10
        k += 1
    return (n, k)

def _at_scale(d, k):
    """The int m with d == m * 10^k (requires k <= d's exponent)."""
    return d[0] * _pow10(d[1] - k)

def _compare(a, b):
    """-1, 0 or 1 as decimal `a` is smaller than, equal to or larger than `b`."""
    k = min(a[1], b[1])
    x, y = _at_scale(a, k), _at_scale(b, k)
    return -1 if x < y else (1 if x > y else 0)

def _magnitude(n, k):
    """floor(log10(|n| * 10^k)) for n != 0."""
    return len(str(_abs(n))) - 1 + k

def format_decimal(d):
    """Renders a decimal the way Python's `repr(float)` would show it.

    Plain notation (`"0.0123"`, `"523.7"`, `"200"`) when the leading digit's
    position is between 10^-5 and 10^15, scientific notation otherwise
    (`"1.234e-07"`, `"5e+20"`). Trailing zeros are dropped; integral values
    have no decimal point.

    Args:
      d: (n, k), the number n * 10^k.

    Returns:
      The string.
    """
    n, k = _normalize(d)
    if n == 0:
        return "0"
    sign = "-" if n < 0 else ""
    digits = str(_abs(n))
    magnitude = _magnitude(n, k)
    if magnitude < -5 or magnitude > 15:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        exponent = str(_abs(magnitude))
        return "{}{}e{}{}".format(sign, mantissa, "-" if magnitude < 0 else "+", "0" * (2 - len(exponent)) + exponent)
    if k >= 0:
        return sign + digits + "0" * k
    point = len(digits) + k
    if point > 0:
        return sign + digits[:point] + "." + digits[point:]
    return sign + "0." + "0" * (-point) + digits

# ---------------------------------------------------------------------------
# Fixed-point logarithm and exponential (scale _SCALE)

def _atanh(z):
    """atanh(z / _SCALE) * _SCALE for 0 <= z < _SCALE / 3, by its power series."""
    z2 = z * z // _SCALE
    term = z
    total = 0
    for i in range(200):
        if term == 0:
            break
        total += term // (2 * i + 1)
        term = term * z2 // _SCALE
    return total

_LN2 = 2 * _atanh(_SCALE // 3)  # ln 2 = 2 atanh(1/3)
_LN10 = 3 * _LN2 + 2 * _atanh(_SCALE // 9)  # ln 10 = 3 ln 2 + ln(5/4); ln(5/4) = 2 atanh(1/9)

def ln_fixed(d):
    """ln(d) * _SCALE for a decimal d > 0.

    Args:
      d: (n, k) with n > 0.

    Returns:
      An int.
    """
    n, k = d
    digits = len(str(n))
    mantissa = n * _SCALE // _pow10(digits - 1)  # n / 10^(digits-1), in [1, 10)
    halvings = 0
    for _ in range(4):
        if mantissa < 2 * _SCALE:
            break
        mantissa = mantissa // 2
        halvings += 1

    # ln(m) = 2 atanh((m - 1) / (m + 1)), with m in [1, 2).
    ln_mantissa = 2 * _atanh((mantissa - _SCALE) * _SCALE // (mantissa + _SCALE))
    return ln_mantissa + halvings * _LN2 + (k + digits - 1) * _LN10

def _exp_fixed(r):
    """exp(r / _SCALE) * _SCALE for 0 <= r < _LN10 (so the result is in [1, 10))."""
    term = _SCALE
    total = _SCALE
    for i in range(1, 200):
        term = term * r // (_SCALE * i)
        if term == 0:
            break
        total += term
    return total

def exp_to_decimal(x, digits = SIGNIFICANT_DIGITS):
    """exp(x / _SCALE) as a decimal rounded to `digits` significant digits.

    Args:
      x: a fixed-point number (scale 10^30).
      digits: significant digits of the result.

    Returns:
      (n, k), with n having `digits` digits.
    """
    q = x // _LN10  # exp(x) = exp(r) * 10^q with r in [0, ln 10)
    mantissa = _exp_fixed(x - q * _LN10)
    n = (2 * mantissa * _pow10(digits - 1) + _SCALE) // (2 * _SCALE)  # rounded, half up
    if n >= _pow10(digits):  # 9.9996 rounds to 10.00
        n = n // 10
        q += 1
    return (n, q - (digits - 1))

# ---------------------------------------------------------------------------
# Sampling

def _clamp(value, low, high):
    if _compare(value, low) < 0:
        return low
    if _compare(value, high) > 0:
        return high
    return value

def _sample_uniform(u, low, high):
    """low + (high - low) * u / 2^53, rounded to SIGNIFICANT_DIGITS digits of the range."""
    k = min(low[1], high[1])
    lo, hi = _at_scale(low, k), _at_scale(high, k)
    step = _magnitude(hi - lo, k) - (SIGNIFICANT_DIGITS - 1)  # values are multiples of 10^step
    if step < k:
        lo, hi, k = _at_scale(low, step), _at_scale(high, step), step
    x = lo * _DRAW_RANGE + (hi - lo) * u  # the value * 2^53, at scale 10^k
    unit = _DRAW_RANGE * _pow10(step - k)
    n = (2 * x + unit) // (2 * unit)  # rounded, half up
    return _clamp((n, step), low, high)

def _sample_loguniform(u, low, high):
    ln_low = ln_fixed(low)
    ln_high = ln_fixed(high)
    return _clamp(exp_to_decimal(ln_low + (ln_high - ln_low) * u // _DRAW_RANGE), low, high)

def sample(entry, u):
    """The value of one search-space entry for the draw `u`.

    Args:
      entry: a list of strings, or a struct from `uniform`, `loguniform` or
        `randint` (validated by `validate_search_space`).
      u: a draw in [0, 2^53).

    Returns:
      The value, a string.
    """
    if type(entry) == "list":
        return entry[u % len(entry)]
    kind = getattr(entry, _DISTRIBUTION)
    if kind == "randint":
        return str(entry.low + u % (entry.high - entry.low + 1))
    low, high = parse_decimal(entry.low), parse_decimal(entry.high)
    if kind == "uniform":
        return format_decimal(_sample_uniform(u, low, high))
    return format_decimal(_sample_loguniform(u, low, high))

def describe_entry(entry):
    """How a search-space entry reads in error messages, e.g. `loguniform(0.001, 10)`."""
    if type(entry) == "struct" and hasattr(entry, _DISTRIBUTION):
        return "{}({}, {})".format(getattr(entry, _DISTRIBUTION), repr(entry.low), repr(entry.high))
    return repr(entry)

def _validate_entry(where, key, entry):
    """Fails naming `where` and `key` unless `entry` is a valid search-space entry."""
    prefix = "{}: search_space[{}]".format(where, repr(key))
    if type(entry) == "list":
        validate_values(where, "search_space[{}]".format(repr(key)), entry)
        return
    if type(entry) != "struct" or not hasattr(entry, _DISTRIBUTION):
        fail("{} must be a list of string values or one of uniform(low, high), loguniform(low, high), randint(low, high) from @databazel//databazel:defs.bzl, got {}".format(prefix, repr(entry)))
    kind = getattr(entry, _DISTRIBUTION)
    if kind == "randint":
        if type(entry.low) != "int" or type(entry.high) != "int":
            fail("{}: randint needs int bounds, got {}".format(prefix, describe_entry(entry)))
        if entry.low > entry.high:
            fail("{}: randint needs low <= high, got {}".format(prefix, describe_entry(entry)))
        return
    low, high = parse_decimal(entry.low), parse_decimal(entry.high)
    if low == None or high == None:
        fail("{}: {} needs numbers as bounds (ints, floats or decimal strings such as \"1e-3\"), got {}".format(prefix, kind, describe_entry(entry)))
    if _compare(low, high) >= 0:
        fail("{}: {} needs low < high, got {}".format(prefix, kind, describe_entry(entry)))
    if kind == "loguniform" and low[0] <= 0:
        fail("{}: loguniform needs 0 < low < high, got {}".format(prefix, describe_entry(entry)))

def _space_size(space):
    """The number of distinct points of a discrete space, or None if a dimension is continuous."""
    size = 1
    for entry in space.values():
        if type(entry) == "list":
            size *= len(entry)
        elif getattr(entry, _DISTRIBUTION) == "randint":
            size *= entry.high - entry.low + 1
        else:
            return None
    return size

def validate_search_space(where, space, num_trials, seed, fixed_hyperparams = {}, count_attr = "num_trials"):
    """Fails with a message naming `where` unless the random search is well-formed.

    Args:
      where: the search's label, for error messages.
      space: dict from hyperparameter name to a list of string values or a
        `uniform`/`loguniform`/`randint` entry.
      num_trials: the number of trials, a positive int.
      seed: the seed, an int.
      fixed_hyperparams: hyperparameters every trial gets; must not overlap the space.
      count_attr: the attribute that set `num_trials`, for error messages
        (`trials_per_round` for the random first round of a tpe search).
    """
    if type(space) != "dict" or not space:
        fail("{}: `search_space` must be a non-empty dict from hyperparameter name to a list of values or uniform(...), loguniform(...), randint(...), got {}".format(where, repr(space)))
    if type(num_trials) != "int" or num_trials < 1:
        fail("{}: `{}` must be a positive int, got {}".format(where, count_attr, repr(num_trials)))
    if type(seed) != "int":
        fail("{}: `seed` must be an int, got {}".format(where, repr(seed)))
    validate_names(where, "search_space", space, fixed_hyperparams)
    for key, entry in space.items():
        _validate_entry(where, key, entry)
    size = _space_size(space)
    if size != None and num_trials > size:
        fail("{}: `{}` is {} but the search space has only {} distinct points; lower `{}` (or use the grid strategy to try them all)".format(where, count_attr, num_trials, size, count_attr))

def expand_random(where, prefix, space, num_trials, seed, fixed_hyperparams = {}, count_attr = "num_trials"):
    """The trials of a random search: the first `num_trials` distinct draws.

    Draw `i` depends only on `seed`, `i` and the hyperparameter names, so the
    trials of `num_trials = N` are the first N trials of `num_trials = M > N`.
    A draw that repeats an earlier trial's values is skipped. Trials are named
    like grid trials (`trial_name`), from their values.

    Args:
      where: the search's label, for error messages.
      prefix: the search's name; every trial name starts with it.
      space: the search space (see `validate_search_space`).
      num_trials: how many trials.
      seed: the seed.
      fixed_hyperparams: hyperparameters every trial gets in addition.
      count_attr: the attribute that set `num_trials`, for error messages.

    Returns:
      A list of structs with `name` and `hyperparams`, as `expand_grid` returns.
    """
    validate_search_space(where, space, num_trials, seed, fixed_hyperparams, count_attr)
    trials = []
    names = {}
    max_draws = _MAX_DRAWS_PER_TRIAL * num_trials
    for index in range(max_draws):
        if len(trials) == num_trials:
            break
        combination = [(key, sample(entry, draw(seed, index, key))) for key, entry in space.items()]
        name = trial_name(prefix, combination)
        if name in names:
            continue
        names[name] = True
        hyperparams = dict(fixed_hyperparams)
        hyperparams.update({k: v for k, v in combination})
        trials.append(struct(name = name, hyperparams = hyperparams))
    if len(trials) < num_trials:
        fail("{}: found only {} distinct trials in {} draws; lower `{}` or widen the search space".format(where, len(trials), max_draws, count_attr))
    return trials

def encode_space(space):
    """The search space as JSON for the suggestion step of a model-based search (suggest.py).

    Args:
      space: a search space validated by `validate_search_space`.

    Returns:
      A JSON string: `{"significant_digits": N, "entries": [...]}`, one entry per
      hyperparameter in search-space order: `{"name", "kind": "choice", "values"}`
      for a list, `{"name", "kind": "randint", "low", "high"}` with int bounds,
      and for `uniform`/`loguniform` the bounds as exact decimal strings.
    """
    entries = []
    for name, entry in space.items():
        if type(entry) == "list":
            entries.append({"kind": "choice", "name": name, "values": entry})
            continue
        kind = getattr(entry, _DISTRIBUTION)
        if kind == "randint":
            entries.append({"high": entry.high, "kind": kind, "low": entry.low, "name": name})
        else:
            entries.append({
                "high": format_decimal(parse_decimal(entry.high)),
                "kind": kind,
                "low": format_decimal(parse_decimal(entry.low)),
                "name": name,
            })
    return json.encode({"entries": entries, "significant_digits": SIGNIFICANT_DIGITS})
