"""GPU trials at load time: `hyperparam_search(gpus = N)` and the platform property that routes them.

The runner holds the GPUs of a trial locally (gpus.py). For remote execution,
Bazel 4.2 takes an action's platform properties from its execution platform
and its target's `exec_properties`, never from the rule: the search macro puts
the property on each trial's `model` and `evaluate` targets.
"""

# The platform property a GPU trial carries: {"gpu": "N"}. Engines match
# properties to workers by name, and the names are theirs; add what yours
# expects (a pool, say) through `exec_properties`, which is merged with it.
GPU_PROPERTY = "gpu"

def check_gpus(where, gpus):
    """Fails naming `where` unless `gpus` is a number of GPUs.

    Args:
      where: the target's label, for the message.
      gpus: the value given.
    """
    if type(gpus) != "int" or gpus < 0:
        fail("{}: `gpus` must be a number of GPUs (an int, 0 for none), got {}".format(where, repr(gpus)))

def gpu_exec_properties(gpus, exec_properties = None):
    """`exec_properties` with the GPU property of a trial that needs `gpus` GPUs.

    Args:
      gpus: the number of GPUs (0: `exec_properties` unchanged).
      exec_properties: the target's own, which win on a clash.

    Returns:
      A dict, or `exec_properties` itself when `gpus` is 0.
    """
    if not gpus:
        return exec_properties
    return dict({GPU_PROPERTY: str(gpus)}, **(exec_properties or {}))
