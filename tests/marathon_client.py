"""Drives Strata's /v2 API with marathon-python, a real Marathon client.

Usage: python3 tests/marathon_client.py http://127.0.0.1:PORT /path/to/strata

The client parses every response into its models and rejects keys it does
not know, so this checks that Strata's JSON is what Marathon's clients
expect. Run by the end-to-end test `services::a_marathon_client_drives_the_api`.
"""

import collections
import collections.abc
import sys
import time

# marathon-python predates Python 3.10, which moved these ABCs.
for _name in ("Iterable", "Mapping", "MutableMapping", "Sequence"):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))

from marathon import MarathonClient
from marathon.exceptions import MarathonHttpError, NotFoundError
from marathon.models import MarathonApp, MarathonHealthCheck
from marathon.models.app import PortDefinition

DEADLINE = 60.0


def wait(what, cond):
    end = time.monotonic() + DEADLINE
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def health_check(**extra):
    """The HTTP check of `strata web`'s /health, checked every second."""
    return MarathonHealthCheck(
        protocol="HTTP",
        path="/health",
        grace_period_seconds=30,
        interval_seconds=1,
        timeout_seconds=2,
        max_consecutive_failures=3,
        **extra,
    )


def main():
    url, strata = sys.argv[1], sys.argv[2]
    c = MarathonClient(url)
    assert c.ping().strip() == b"pong", c.ping()

    app = MarathonApp(
        cmd=f"exec {strata} web --port $PORT0 --bind 127.0.0.1",
        cpus=0.1,
        mem=32,
        instances=1,
        port_definitions=[PortDefinition(port=0, protocol="tcp")],
        health_checks=[health_check()],
        labels={"strata.class": "service"},
    )
    created = c.create_app("py-web", app)
    assert created.id == "/py-web", created.id

    try:
        c.create_app("py-web", app)
        raise SystemExit("a second create of the same id was accepted")
    except MarathonHttpError as e:
        assert e.status_code == 409, e.status_code

    wait("one healthy instance", lambda: c.get_app("py-web").tasks_healthy == 1)
    c.scale_app("py-web", instances=2)
    got = wait("two healthy instances", lambda: (lambda a: a if a.tasks_healthy == 2 else None)(c.get_app("py-web")))
    assert got.instances == 2
    assert got.version is not None

    tasks = c.list_tasks("py-web")
    assert len(tasks) == 2, tasks
    for t in tasks:
        assert t.app_id == "/py-web", t.app_id
        assert t.ports and t.ports[0] > 0, t.ports
        assert t.started_at is not None
        assert t.health_check_results and t.health_check_results[0].alive

    assert any(a.id == "/py-web" for a in c.list_apps())
    assert c.list_deployments() == [] or all(
        d.affected_apps == ["/py-web"] for d in c.list_deployments()
    )
    info = c.get_info()
    assert info.name == "strata", info.name

    c.delete_app("py-web", force=True)

    def gone():
        try:
            c.get_app("py-web")
            return False
        except NotFoundError:
            return True

    wait("the app to be deleted", gone)

    # The common app a Marathon client sends: a command on $PORT0 with an
    # HTTP health check on port index 0 and no port list. Marathon gives it
    # one port of any number.
    plain = MarathonApp(
        cmd=f"exec {strata} web --port $PORT0 --bind 127.0.0.1",
        cpus=0.1,
        mem=32,
        instances=1,
        health_checks=[health_check(port_index=0)],
    )
    assert "portDefinitions" not in plain.to_json(), plain.to_json()
    created = c.create_app("py-plain", plain)
    assert len(created.port_definitions) == 1, created.port_definitions
    assert created.port_definitions[0].port == 0, created.port_definitions
    wait("the plain app healthy", lambda: c.get_app("py-plain").tasks_healthy == 1)
    (task,) = c.list_tasks("py-plain")
    assert len(task.ports) == 1 and task.ports[0] > 0, task.ports
    c.delete_app("py-plain", force=True)
    print("marathon-python: ok")


if __name__ == "__main__":
    main()
