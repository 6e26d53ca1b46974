"""gateway/metrics.py on its own: values, histogram buckets, escaping, and the text
format 0.0.4 checked line by line."""

from __future__ import annotations

import math

import pytest

from gateway.metrics import Registry, escape_label_value, format_value


def test_counter_renders_help_type_and_one_line_per_label_set() -> None:
    registry = Registry()
    c = registry.counter("demo_requests_total", "Requests.", ("route", "status"))
    c.inc("/a", "200")
    c.inc("/a", "200", amount=2)
    c.inc("/b", "404")
    assert registry.render() == (
        "# HELP demo_requests_total Requests.\n"
        "# TYPE demo_requests_total counter\n"
        'demo_requests_total{route="/a",status="200"} 3\n'
        'demo_requests_total{route="/b",status="404"} 1\n'
    )
    assert c.value("/a", "200") == 3
    assert c.value("/never", "500") == 0


def test_counter_refuses_to_go_down_and_wrong_label_counts() -> None:
    c = Registry().counter("x_total", "x", ("a",))
    with pytest.raises(ValueError):
        c.inc("v", amount=-1)
    with pytest.raises(ValueError):
        c.inc("v", "extra")
    with pytest.raises(ValueError):
        c.inc()
    with pytest.raises(TypeError):
        c.inc(200)  # type: ignore[arg-type]


def test_unlabelled_metric_and_fractional_values() -> None:
    registry = Registry()
    c = registry.counter("bytes_total", "Bytes.")
    c.inc(amount=0.5)
    assert registry.render().splitlines()[-1] == "bytes_total 0.5"


def test_label_values_are_escaped() -> None:
    registry = Registry()
    c = registry.counter("esc_total", "Escapes.", ("v",))
    c.inc('back\\slash "quoted"\nnewline')
    line = registry.render().splitlines()[-1]
    assert line == 'esc_total{v="back\\\\slash \\"quoted\\"\\nnewline"} 1'
    assert escape_label_value("plain") == "plain"


def test_help_is_escaped_but_quotes_are_not() -> None:
    registry = Registry()
    registry.counter("h_total", 'a "b" c\\d\ne')
    assert registry.render().splitlines()[0] == '# HELP h_total a "b" c\\\\d\\ne'


def test_histogram_buckets_are_cumulative_with_inf_equal_to_count() -> None:
    registry = Registry()
    h = registry.histogram("lat_seconds", "Latency.", ("route",), buckets=(0.1, 1.0, 5.0))
    for value in (0.05, 0.1, 0.5, 2.0, 7.0, 7.0):
        h.observe(value, "/a")
    lines = registry.render().splitlines()
    assert lines[:2] == ["# HELP lat_seconds Latency.", "# TYPE lat_seconds histogram"]
    assert lines[2:] == [
        'lat_seconds_bucket{route="/a",le="0.1"} 2',  # 0.1 itself is in le=0.1
        'lat_seconds_bucket{route="/a",le="1"} 3',
        'lat_seconds_bucket{route="/a",le="5"} 4',
        'lat_seconds_bucket{route="/a",le="+Inf"} 6',
        'lat_seconds_sum{route="/a"} 16.65',
        'lat_seconds_count{route="/a"} 6',
    ]
    assert h.count("/a") == 6 and h.count("/b") == 0


def test_histogram_rejects_bad_buckets_and_le_label() -> None:
    registry = Registry()
    with pytest.raises(ValueError):
        registry.histogram("a_seconds", "a", buckets=(1.0, 0.5))
    with pytest.raises(ValueError):
        registry.histogram("b_seconds", "b", buckets=())
    with pytest.raises(ValueError):
        registry.histogram("c_seconds", "c", ("le",))


def test_callback_metrics_are_read_at_render_time() -> None:
    registry = Registry()
    state = {"open": 1.0}
    registry.callback(
        "pool", "Pool.", ("state",), lambda: [(("open",), state["open"]), (("busy",), 0.0)]
    )
    registry.callback("evictions_total", "Ev.", (), lambda: [((), 4.0)], kind="counter")
    assert 'pool{state="open"} 1' in registry.render()
    state["open"] = 3.0
    text = registry.render()
    assert 'pool{state="open"} 3' in text
    assert "# TYPE pool gauge" in text
    assert "# TYPE evictions_total counter\nevictions_total 4\n" in text


def test_registering_again_returns_the_same_metric_or_refuses_a_different_one() -> None:
    registry = Registry()
    first = registry.counter("again_total", "x", ("a",))
    assert registry.counter("again_total", "x", ("a",)) is first
    with pytest.raises(ValueError):
        registry.counter("again_total", "x", ("b",))
    with pytest.raises(ValueError):
        registry.histogram("again_total", "x", ("a",))
    # A callback can be replaced (a new lifespan reads new objects), in place.
    registry.callback("g", "g", (), lambda: [((), 1.0)])
    registry.callback("g", "g", (), lambda: [((), 2.0)])
    assert registry.render().count("# TYPE g gauge") == 1
    assert "\ng 2\n" in registry.render()


def test_names_are_validated() -> None:
    registry = Registry()
    for bad in ("1abc", "has-dash", "sp ace", ""):
        with pytest.raises(ValueError):
            registry.counter(bad, "x")
    with pytest.raises(ValueError):
        registry.counter("ok_total", "x", ("__reserved",))
    with pytest.raises(ValueError):
        registry.counter("ok2_total", "x", ("a", "a"))


def test_two_registries_share_nothing() -> None:
    a, b = Registry(), Registry()
    a.counter("same_total", "x").inc()
    b.counter("same_total", "x")
    assert "same_total 1" in a.render()
    assert "same_total 1" not in b.render()


@pytest.mark.parametrize(
    "value,text",
    [
        (0.0, "0"),
        (3.0, "3"),
        (0.25, "0.25"),
        (1e-05, "1e-05"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
        (2.0**60, repr(2.0**60)),
    ],
)
def test_value_format(value: float, text: str) -> None:
    assert format_value(value) == text
