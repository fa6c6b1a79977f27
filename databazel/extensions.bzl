"""Module extensions for bzlmod (MODULE.bazel): the Python environment databazel's actions run in.

```starlark
# MODULE.bazel
bazel_dep(name = "databazel", version = "0.1.0")

python_env = use_extension("@databazel//databazel:extensions.bzl", "python_env")
python_env.environment(
    name = "my_python",
    requirements_lock = "//:requirements_lock.txt",
)
use_repo(python_env, "my_python")

register_toolchains("@my_python//:toolchain")
```

This is the bzlmod form of `python_env` (see repositories.bzl); it takes the
same attributes.
"""

load("//databazel/private:python_env.bzl", "PYTHON_ENV_ATTRS", _python_env_rule = "python_env")

def _python_env_impl(module_ctx):
    created = {}
    for module in module_ctx.modules:
        for env in module.tags.environment:
            if env.name in created:
                fail("databazel python_env: two modules declare the environment `{}` ({} and {}); give one of them another name".format(
                    env.name,
                    created[env.name],
                    module.name,
                ))
            created[env.name] = module.name
            _python_env_rule(
                name = env.name,
                repo_name = env.name,
                python_interpreter = env.python_interpreter,
                requirements_lock = env.requirements_lock,
                prune_tests = env.prune_tests,
                prune_build_files = env.prune_build_files,
                timeout = env.timeout,
            )

_environment = tag_class(
    doc = "One Python environment: a repository `@<name>` whose toolchain `@<name>//:toolchain` you register.",
    attrs = dict(PYTHON_ENV_ATTRS, **{
        "name": attr.string(
            mandatory = True,
            doc = "Repository name. Bring it into scope with `use_repo` and register `@<name>//:toolchain`.",
        ),
    }),
)

python_env = module_extension(
    implementation = _python_env_impl,
    doc = "Creates Python environments (virtualenvs from hash-pinned lock files) and exposes each as a Python toolchain, like the `python_env` repository rule does in a WORKSPACE.",
    tag_classes = {"environment": _environment},
)
