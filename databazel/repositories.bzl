"""Repository rules for WORKSPACE files: the Python environment databazel's actions run in.

```starlark
load("@databazel//databazel:repositories.bzl", "python_env")
```
"""

load("//databazel/private:python_env.bzl", _python_env = "python_env")

python_env = _python_env
