"""Repository rules and macros for WORKSPACE files: the Python environment databazel's actions run in.

```starlark
load("@databazel//databazel:repositories.bzl", "databazel_dependencies")

databazel_dependencies()
```

With bzlmod, use `MODULE.bazel` and extensions.bzl instead.
"""

load("@bazel_tools//tools/build_defs/repo:http.bzl", "http_archive")
load("@bazel_tools//tools/build_defs/repo:utils.bzl", "maybe")
load("//databazel/private:python_env.bzl", _python_env = "python_env")

python_env = _python_env

# A WORKSPACE macro, like rules_go's go_rules_dependencies(): it takes no `name`.
# buildifier: disable=unnamed-macro
def databazel_dependencies(
        python_env_name = "databazel_python",
        requirements_lock = None,
        python_interpreter = "python3",
        register_toolchain = True):
    """Declares what databazel's rules need in a WORKSPACE: bazel-skylib, a Python environment and its toolchain.

    The rules need Bazel itself (`@bazel_tools`), bazel-skylib (`lib/paths.bzl`,
    `lib/shell.bzl`) and a Python toolchain. This macro declares
    `@bazel_skylib` (1.0.3, the version of databazel's `MODULE.bazel`) unless a
    repository of that name already exists, creates the environment with
    `python_env` unless a repository named `python_env_name` already exists, and
    registers its toolchain `@<python_env_name>//:toolchain`:

    ```starlark
    load("@databazel//databazel:repositories.bzl", "databazel_dependencies")

    databazel_dependencies(requirements_lock = "//:requirements_lock.txt")
    ```

    Call it after anything that registers a Python toolchain you prefer: Bazel
    uses the first registered toolchain that matches.

    Args:
      python_env_name: name of the environment's repository. `None` creates and
        registers no environment, for a workspace that registers another Python
        toolchain (such as rules_python's).
      requirements_lock: as in `python_env`: a hash-pinned lock file, or `None`
        for the standard library only.
      python_interpreter: as in `python_env`: the host interpreter the
        environment is created from.
      register_toolchain: whether to register the environment's toolchain.
    """
    maybe(
        http_archive,
        name = "bazel_skylib",
        sha256 = "1c531376ac7e5a180e0237938a2536de0c54d93f5c278634818e0efc952dd56c",
        urls = [
            "https://mirror.bazel.build/github.com/bazelbuild/bazel-skylib/releases/download/1.0.3/bazel-skylib-1.0.3.tar.gz",
            "https://github.com/bazelbuild/bazel-skylib/releases/download/1.0.3/bazel-skylib-1.0.3.tar.gz",
        ],
    )
    if not python_env_name:
        return
    maybe(
        _python_env,
        name = python_env_name,
        requirements_lock = requirements_lock,
        python_interpreter = python_interpreter,
    )
    if register_toolchain:
        native.register_toolchains("@{}//:toolchain".format(python_env_name))
