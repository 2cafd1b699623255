"""Templates are bounded: rendering time, output size and loop iterations, enforced while a
template renders, at validation and at send. Every payload here is refused quickly and
without building the huge value it asks for."""

from __future__ import annotations

import json
import resource
import time
from itertools import pairwise

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from click.testing import CliRunner
from clm_email import templates
from clm_email.settings import EmailSettings, TemplateLimits, resolve_settings

from clm_engine import Engine
from clm_engine.cli import cli
from clm_engine.scheduling import _new, install_jobs, watch_rulesets
from conftest import send_rule, signup

HUGE = "over the limit of 262,144 characters of output (template_limits.max_output)"
LOOPS = "over the limit of 10,000 loop iterations (template_limits.max_loop_iterations)"
TIME = "over the limit of 1 s of rendering time (template_limits.max_seconds)"
SANDBOX = "not allowed in a template"
NESTED = ["['xxxxxxxxxx'] * 10", *(f"[{'ab'[i % 2]}] * 10" for i in range(6))]

PAYLOADS = [
    # what was seen
    ("{{ 'x' * 10**9 }}", HUGE),
    ("{{ lipsum(n=1000000) }}", "'lipsum' is undefined"),
    (
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        LOOPS,
    ),
    ("{{ range(10**9)|list }}", LOOPS),
    ("{{ 'a'|center(10**9) }}", HUGE),
    ("{{ 'a'|center(1000000000) }}", HUGE),  # a constant: not folded when compiled
    ("{{ '%s'|format('x')*10**8 }}", HUGE),
    ("{{ ''.join(['x']*10**9) }}", HUGE),
    # string formatting
    ("{{ '%0999999999d' % 1 }}", HUGE),
    ("{{ '%*d' % (999999999, 1) }}", "a width taken from the values"),
    ("{{ '%.999999999f' % 1.5 }}", HUGE),
    ("{{ '{:>999999999}'.format('x') }}", HUGE),
    ("{{ '{0:{1}}'.format('x', 999999999) }}", "a width taken from the values"),
    ("{{ '{x:^999999999}'.format_map({'x': 1}) }}", HUGE),
    ("{{ '%s'|format('x'*200000) * 2 }}", HUGE),
    ("{{ ('%s' * 1000) % (('x' * 1000),) }}", HUGE),  # estimated before it is tried
    ("{{ ('%s%s') % ('x' * 200000, 'y' * 200000) }}", HUGE),
    # filters with huge arguments
    ("{{ 'x'|wordwrap(1, wrapstring='y' * 200000) }}", HUGE),
    ("{{ 'x'|indent(10**9) }}", HUGE),
    ("{{ ('x\n' * 100000)|indent(100) }}", HUGE),
    ("{{ 'x'|truncate(10**9) ~ 'x' * 10**9 }}", HUGE),
    ("{{ ('x' * 1000)|replace('x', 'y' * 1000) }}", HUGE),
    ("{{ 'x'|batch(10**9, 'y')|list }}", HUGE),
    ("{{ [1, 2]|slice(10**9)|list }}", HUGE),
    ("{{ [1]|tojson(indent=10**9) }}", "tojson indent"),
    ("{% set s = 'x' * 200000 %}{{ ([s] * 200000)|join }}", HUGE),
    ("{% set s = 'x' * 200000 %}{{ [s, s]|map('center', 10**9)|list }}", HUGE),
    # methods
    ("{{ 'x'.ljust(10**9) }}", HUGE),
    ("{{ '1'.zfill(10**9) }}", HUGE),
    ("{{ ('\t' * 1000).expandtabs(10**6) }}", HUGE),
    ("{{ ('x' * 1000).replace('x', 'y' * 1000) }}", HUGE),
    ("{{ 'xxx'.translate({120: 'y' * 200000}) }}", HUGE),
    ("{{ (1).to_bytes(10**9, 'big') }}", HUGE),
    ("{{ ('x' * 1000).encode() * 10**6 }}", HUGE),
    # numbers
    ("{{ 10 ** 100000 }}", "over 4,300 digits"),
    (
        "{% set n = namespace(v=3) %}{% for i in range(40) %}{% set n.v = n.v * n.v %}{% endfor %}",
        "over 4,300 digits",
    ),
    # growing values in loops
    (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}",
        HUGE,
    ),
    (
        "{% set ns = namespace(s=['x']) %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
        "{% endfor %}",
        HUGE,
    ),
    (
        "{% set s = 'x' * 200000 %}{% set x %}{% for i in range(10000) %}{{ s }}{% endfor %}"
        "{% endset %}{{ x|length }}",
        HUGE,
    ),
    (
        "{% set s = 'x' * 200000 %}{% filter upper %}{% for i in range(10000) %}{{ s }}"
        "{% endfor %}{% endfilter %}",
        HUGE,
    ),
    # small in memory, enormous as text
    (
        "".join(f"{{% set {'ab'[i % 2] if i else 'b'} = {n} %}}" for i, n in enumerate(NESTED))
        + "{{ a }}",
        HUGE,
    ),
    # loops and recursion
    ("{% for i in range(5000) %}{% for j in range(5000) %}{% endfor %}{% endfor %}", LOOPS),
    ("{% for i in range(10000) %}{% endfor %}{% for i in [1] %}{% endfor %}", LOOPS),
    ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "call themselves too deeply"),
    (
        "{% set l = [1] * 30 %}{% for x in [[l] * 30] * 30 recursive %}"
        "{% if x is iterable %}{{ loop(x) }}{% endif %}{% endfor %}",
        LOOPS,
    ),
    # the sandbox, as before
    ("{{ ''.__class__.__mro__ }}", SANDBOX),
    ("{{ attributes.pop('plan') }}", SANDBOX),
    ("{{ cycler.__init__.__globals__ }}", SANDBOX),
    ("{{ ''.format.__globals__ }}", SANDBOX),
    ("{{ '{0.__class__}'.format('') }}", SANDBOX),
    ("{% include 'secrets.txt' %}", "include, extends and import are not available"),
]


def template(text: str, **fields) -> templates.EmailTemplate:
    return templates.EmailTemplate(email_template="greedy", subject="Hi", text=text, **fields)


@pytest.mark.parametrize(("source", "message"), PAYLOADS)
def test_a_template_over_a_limit_is_refused_fast_at_validation(source, message):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    problems = templates.check_template(template(source))
    took = time.perf_counter() - started
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert len(problems) == 1, problems
    pointer, text = problems[0]
    assert pointer == "/text"
    assert message in text
    if "over the limit" in message:
        assert "template 'greedy', text: " in text  # the template and the part
    # Before the bounds these took 21 s, 125 s or forever; the margin is for a loaded CI box.
    assert took < 2.0, f"{took:.2f} s"
    assert grown_kib < 64 * 1024  # no value of a gigabyte was built, not even for a moment


def test_rendering_time_is_bounded_where_no_other_limit_is_hit():
    # 2**18 macro calls that write nothing: no loop, no output, only time.
    source = (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(18) }}"
    )
    limits = TemplateLimits(max_seconds=0.2)
    context = templates.context_for(
        templates._FULL, template(source), unsubscribe_url="https://x.example/u"
    )
    started = time.perf_counter()
    with pytest.raises(templates.TemplateLimitError) as error:
        templates.render(template(source), context, limits)
    assert time.perf_counter() - started < 1.5  # 0.2 s of rendering, then it stops
    assert "over the limit of 0.2 s of rendering time (template_limits.max_seconds)" in str(
        error.value
    )


def test_output_is_counted_over_the_whole_message():
    limits = TemplateLimits(max_output=2000)
    fine = template("{{ 'x' * 900 }}", html="{{ 'y' * 900 }}")
    context = templates.context_for(templates._FULL, fine, unsubscribe_url="https://x/u")
    templates.render(fine, context, limits)
    over = template("{{ 'x' * 1500 }}", html="{{ 'y' * 1500 }}")
    with pytest.raises(templates.TemplateLimitError, match=r"'greedy', html: over the limit"):
        templates.render(over, context, limits)


def test_ordinary_templates_render_as_before():
    source = (
        "{% macro item(name) %}<li>{{ name|title }}</li>{% endmacro %}"
        "{% for k, v in attributes|dictsort %}{{ loop.index }}/{{ loop.length }} {{ k }}={{ v }}"
        "{% endfor %}{{ '%s and %d'|format('a', 2) }} {{ '{:,}'.format(1234567) }} "
        "{{ item('ada') }} {{ [1, 2, 3]|join(',') }} {{ 'ab' * 3 }} {{ 2 ** 10 }} "
        "{{ range(3)|list }} {{ 'x'|center(5) }}|{{ (first_name ~ '!')|upper }}"
    )
    tpl = template(source, fallbacks={"first_name": "there"})
    context = templates.context_for(templates._FULL, tpl, unsubscribe_url="https://x/u")
    text = templates.render(tpl, context).text
    assert "1/6 company=Analytical Engines Ltd" in text
    assert "a and 2 1,234,567 <li>Ada</li> 1,2,3 ababab 1024 [0, 1, 2]   x  |ADA!" in text
    assert templates.check_template(tpl) == []


def test_the_limits_are_settings_with_documented_defaults(tmp_path):
    assert EmailSettings().template_limits == TemplateLimits(
        max_seconds=1.0, max_output=262_144, max_loop_iterations=10_000
    )
    path = tmp_path / "email.json"
    path.write_text(json.dumps({"template_limits": {"max_loop_iterations": 5}}))
    settings = resolve_settings({"CLM_EMAIL_SETTINGS": str(path)})
    assert settings.template_limits.max_loop_iterations == 5
    path.write_text(json.dumps({"template_limits": {"max_seconds": 0}}))
    with pytest.raises(ValueError, match=r"template_limits\.max_seconds"):
        resolve_settings({"CLM_EMAIL_SETTINGS": str(path)})


def test_validation_uses_the_configured_limits(tmp_path, monkeypatch):
    path = tmp_path / "email.json"
    path.write_text(json.dumps({"template_limits": {"max_loop_iterations": 5}}))
    monkeypatch.setenv("CLM_EMAIL_SETTINGS", str(path))
    [(pointer, message)] = templates.check_template(
        template("{% for i in range(3) %}{% for j in range(3) %}{% endfor %}{% endfor %}")
    )
    assert pointer == "/text"
    assert "over the limit of 5 loop iterations (template_limits.max_loop_iterations)" in message


def test_a_template_over_a_limit_at_send_is_a_permanent_failure_never_half_sent(mail):
    mail.write(
        "rows.json",
        {
            "email_template": "rows",
            "subject": "Your seats",
            # Valid, and renders for the sample contacts; a real contact has 50,000 seats.
            "text": "{% for i in range(attributes.seats | default(1)) %}-{% endfor %}",
        },
    )
    mail.ruleset(send_rule("rows"))
    engine = mail.open()
    engine.ingest(signup(seats=50_000))
    report = engine.dispatch()
    assert report.outcomes["failed"] == 1, report.as_dict()
    [row] = mail.sends()
    assert row.status == "failed"  # not retried: it would go over again
    assert "template 'rows', text: range() of 50,000 numbers: " + LOOPS in row.note
    [logged] = mail.log()
    assert logged["status"] == "failed" and "max_loop_iterations" in logged["error"]
    assert mail.files() == []
    mail.clock.advance(hours=1)
    assert engine.dispatch().total == 0


def test_a_template_over_a_limit_fails_clm_validate_with_its_file_and_pointer(mail):
    mail.write(
        "greedy.json", {"email_template": "greedy", "subject": "x", "text": "{{ 'x' * 10**9 }}"}
    )
    mail.ruleset(send_rule("greedy"))
    started = time.perf_counter()
    result = CliRunner().invoke(cli, ["validate", str(mail.rules)])
    assert time.perf_counter() - started < 2
    assert result.exit_code != 0
    assert "greedy.json" in result.output and "/text" in result.output
    assert HUGE in result.output


@pytest.mark.slow
def test_a_slow_template_dropped_into_a_running_engines_folder_does_not_delay_its_pumps(
    mail, monkeypatch
):
    # Legal until its time runs out: validating it takes 1.5 s of rendering.
    limits = {"max_seconds": 1.5, "max_loop_iterations": 10_000_000}
    mail.settings(monkeypatch, template_limits=limits)
    mail.ruleset(send_rule())
    engine = Engine(mail.root / "clm.db", rulesets=[mail.rules])  # the real clock: clm run's
    mail.engine = engine
    scheduler = _new(BackgroundScheduler)
    pumps: list[float] = []
    reloads: list[tuple[float, bool, str]] = []

    def on_tick(report) -> None:
        pumps.append(time.monotonic())

    def on_reload(ok: bool, message: str) -> None:
        reloads.append((time.monotonic(), ok, message))

    install_jobs(engine, scheduler, interval=0.05, on_tick=on_tick)
    watch_rulesets(
        engine, scheduler, every=0.05, interval=0.05, on_tick=on_tick, on_reload=on_reload
    )
    scheduler.start()
    try:
        _wait(lambda: len(pumps) >= 5)
        slow = "{% for i in range(5000) %}{% for j in range(5000) %}{% endfor %}{% endfor %}"
        mail.write("slow.json", {"email_template": "slow", "subject": "x", "text": slow})
        dropped = time.monotonic()
        _wait(lambda: reloads)
        (mail.rules / "slow.json").unlink()
        _wait(lambda: len(reloads) >= 2)
    finally:
        scheduler.shutdown(wait=True)
    refused_at, ok, message = reloads[0]
    assert not ok and "slow.json" in message and "template_limits.max_seconds" in message
    assert refused_at - dropped >= 1.5  # validating it took the time it was given
    during = [dropped, *(t for t in pumps if dropped < t < refused_at), refused_at]
    gaps = [later - earlier for earlier, later in pairwise(during)]
    # Shorter than the validation (1.5 s or more): the pumps ran while it did.
    assert max(gaps) < 1.0, f"a pump waited {max(gaps):.2f} s for the validation"
    assert len(during) > 10
    assert reloads[1][1] is True and reloads[1][2].startswith("loaded mail v1")
    assert "slow" not in engine.documents.get(templates.KIND, {})


def _wait(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
