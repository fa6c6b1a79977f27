"""Old spellings of renamed public attributes: accepted for one release, with a message naming the new one."""

# The first release that no longer accepts the old spellings.
REMOVED_IN = "0.2.0"

def renamed(where, old_name, old_value, new_name, new_value, unset = None):
    """The value of an attribute renamed from `old_name` to `new_name`.

    Returns `new_value` unless the old spelling was used; then prints a message
    naming the new spelling and returns `old_value`. Both set fails.

    Args:
      where: the target's label, for the messages.
      old_name: the attribute's old name.
      old_value: its value under the old name (`unset` if not given).
      new_name: the attribute's new name.
      new_value: its value under the new name (`unset` if not given).
      unset: the value of an attribute that was not given.

    Returns:
      The attribute's value.
    """
    if old_value == unset:
        return new_value
    if new_value != unset:
        fail("{}: `{}` is the old name of `{}`; set only `{}`".format(where, old_name, new_name, new_name))

    # buildifier: disable=print
    print("{}: `{}` is renamed `{}`: write {} = {} (the old name is accepted until databazel {})".format(
        where,
        old_name,
        new_name,
        new_name,
        repr(old_value),
        REMOVED_IN,
    ))
    return old_value
