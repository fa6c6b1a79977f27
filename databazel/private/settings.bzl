"""databazel's build settings (command-line flags read by the rules)."""

WarmInfo = provider(
    doc = "Whether training and evaluation run in warm persistent workers.",
    fields = {"enabled": "bool: the value of `--@databazel//databazel:warm` (default True)."},
)

def _warm_flag_impl(ctx):
    return [WarmInfo(enabled = ctx.build_setting_value)]

warm_flag = rule(
    implementation = _warm_flag_impl,
    build_setting = config.bool(flag = True),
    doc = "The `--@databazel//databazel:warm` flag: run training and evaluation in warm persistent workers (the default; `=false`: each a new process in Bazel's sandbox). See docs/warm-workers.md.",
)

IsolateInfo = provider(
    doc = "Whether databazel isolates scripts that Bazel does not sandbox.",
    fields = {"enabled": "bool: the value of `--@databazel//databazel:isolate` (default True)."},
)

def _isolate_flag_impl(ctx):
    if not ctx.build_setting_value:
        # Analysed once per configuration: the build says it once.
        print("databazel: {}=false: trials in warm workers and local actions run without isolation (they may read undeclared files and reach the network); their results are cached under other keys than isolated ones, and never served to isolated builds.".format(ctx.label))  # buildifier: disable=print
    return [IsolateInfo(enabled = ctx.build_setting_value)]

isolate_flag = rule(
    implementation = _isolate_flag_impl,
    build_setting = config.bool(flag = True),
    doc = "The `--@databazel//databazel:isolate` flag: where Bazel does not sandbox a trial (a warm worker, the local strategy), databazel isolates it with Linux namespaces (the default). `=false` turns that off, for machines without user namespaces; such trials get other cache keys. See docs/warm-workers.md.",
)
