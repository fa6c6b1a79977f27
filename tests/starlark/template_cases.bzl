"""Templates and how they parse, shared by the Starlark and the Python parser.

templates_test.bzl checks databazel/private/templates.bzl against these, and
tests/unit/test_templates.py checks databazel/private/templates.py (reading
this file as a Python literal), so the load-time check and the runner agree.
Each case: [template, its placeholders in order (None: an error), the error].
"""

TEMPLATE_CASES = [
    ["--lr=0.01", [], ""],
    ["", [], ""],
    ["{data}", ["data"], ""],
    ["--lr={hp.lr}", ["hp.lr"], ""],
    ["{hp.a}{hp.b}-{epoch}", ["hp.a", "hp.b", "epoch"], ""],
    ["--json={{\"a\": 1}}", [], ""],
    ["{{data}}", [], ""],
    ["{{{data}}}", ["data"], ""],
    ["}}{{", [], ""],
    ["{}", [""], ""],
    ["{ data }", [" data "], ""],
    ["--x={data", None, "has a `{` with no closing `}` (write `{{` for a literal `{`)"],
    ["{", None, "has a `{` with no closing `}` (write `{{` for a literal `{`)"],
    ["{a{b}", None, "has a `{` with no closing `}` (write `{{` for a literal `{`)"],
    ["{{{data}", ["data"], ""],
    ["{{{data", None, "has a `{` with no closing `}` (write `{{` for a literal `{`)"],
    ["data}", None, "has a `}` with no opening `{` (write `}}` for a literal `}`)"],
    ["}", None, "has a `}` with no opening `{` (write `}}` for a literal `}`)"],
    ["{data}}", None, "has a `}` with no opening `{` (write `}}` for a literal `}`)"],
    ["{data}}}", ["data"], ""],
    ["café {hp.été}", ["hp.été"], ""],
    ["--note={hp.a}\n{{multi-line}}", ["hp.a"], ""],
]
