"""databazel's build settings (command-line flags read by the rules)."""

WarmInfo = provider(
    doc = "Whether training and evaluation run in warm persistent workers.",
    fields = {"enabled": "bool: the value of `--@databazel//databazel:warm`."},
)

def _warm_flag_impl(ctx):
    return [WarmInfo(enabled = ctx.build_setting_value)]

warm_flag = rule(
    implementation = _warm_flag_impl,
    build_setting = config.bool(flag = True),
    doc = "The `--@databazel//databazel:warm` flag: run training and evaluation in warm persistent workers (see docs/warm-workers.md).",
)
