"""A Mesos framework written with pymesos, run against Strata's manager.

Usage:
  mesos_framework.py first MASTER TOKEN OUT_DIR
  mesos_framework.py resume MASTER TOKEN OUT_DIR FRAMEWORK_ID

`first` subscribes (HTTP Basic with the token as the secret), launches on
its offers a task that writes to stdout and finishes, one that fails, one
that runs on, and one that asks for more cpus than its offer holds;
declines the rest with a filter; reconciles explicitly and implicitly;
suppresses and revives offers; then stops *for failover* (no teardown),
leaving the long task running, and writes what it saw to
OUT_DIR/first.json. `resume` is a new scheduler process with the same
framework id: it re-subscribes within the failover timeout, finds the long
task running by reconciliation, kills it and tears the framework down,
writing OUT_DIR/resume.json. Each waits on conditions with deadlines.
"""

import faulthandler
import json
import logging
import sys
import threading
import time

from addict import Dict
from pymesos import MesosSchedulerDriver, Scheduler

phase, master, token, out_dir = sys.argv[1:5]
resume_id = sys.argv[5] if phase == "resume" else None
faulthandler.dump_traceback_later(100, exit=True)
logging.basicConfig(level=logging.WARNING)

DEADLINE = 60.0


def resources(offer, name):
    return sum(r.scalar.value for r in offer.resources if r.name == name)


def task(offer, task_id, cmd, cpus=0.1):
    t = Dict()
    t.task_id.value = task_id
    t.agent_id.value = offer.agent_id.value
    t.name = task_id
    t.command.value = cmd
    t.resources = [
        dict(name="cpus", type="SCALAR", scalar={"value": cpus}),
        dict(name="mem", type="SCALAR", scalar={"value": 16}),
    ]
    return t


class Recorder(Scheduler):
    """Keeps every callback's facts under a lock; waits on them."""

    def __init__(self):
        self.cond = threading.Condition()
        self.framework_id = None
        self.resubscribed = False
        self.offers = 0
        self.offer_times = []
        self.first_offer = None
        self.launched = False
        self.updates = []  # (task_id, state, reason, message, source)

    def registered(self, driver, framework_id, master_info):
        with self.cond:
            self.framework_id = framework_id.value
            self.master_version = master_info.get("version")
            self.cond.notify_all()

    def reregistered(self, driver, master_info):
        with self.cond:
            self.resubscribed = True
            self.framework_id = driver.framework_id
            self.cond.notify_all()

    def resourceOffers(self, driver, offers):
        with self.cond:
            self.offers += len(offers)
            self.offer_times.append(time.time())
            launch_now = phase == "first" and not self.launched
            self.launched = True
            self.cond.notify_all()
        for i, offer in enumerate(offers):
            if launch_now and i == 0:
                self.first_offer = offer
                cpus = resources(offer, "cpus")
                tasks = [
                    task(offer, "echo", "echo hello-from-pymesos"),
                    task(offer, "fail", "echo failing >&2; exit 3"),
                    task(offer, "long", "sleep 600"),
                    task(offer, "too-big", "true", cpus=cpus + 100),
                ]
                driver.launchTasks(offer.id, tasks, {"refuse_seconds": 1})
            else:
                driver.declineOffer(offer.id, {"refuse_seconds": 3600})

    def offerRescinded(self, driver, offer_id):
        pass

    def statusUpdate(self, driver, update):
        with self.cond:
            self.updates.append(
                dict(
                    task=update.task_id.value,
                    state=update.state,
                    reason=update.get("reason"),
                    message=update.get("message"),
                    source=update.get("source"),
                    agent=update.get("agent_id", {}).get("value"),
                    has_uuid="uuid" in update,
                )
            )
            self.cond.notify_all()

    def error(self, driver, message):
        with self.cond:
            self.updates.append(dict(task=None, state="ERROR", message=message))
            self.cond.notify_all()

    def wait(self, what, predicate):
        deadline = time.time() + DEADLINE
        with self.cond:
            while not predicate():
                left = deadline - time.time()
                if left <= 0:
                    print(f"timed out waiting for {what}; saw {self.updates}", file=sys.stderr)
                    sys.exit(2)
                self.cond.wait(left)

    def count(self, task_id, state, reason=None):
        return sum(
            1
            for u in self.updates
            if u["task"] == task_id
            and u["state"] == state
            and (reason is None or u["reason"] == reason)
        )

    def seen(self, task_id, state, reason=None):
        return self.count(task_id, state, reason) > 0


sched = Recorder()
framework = Dict()
framework.user = ""
framework.name = "pymesos-check"
framework.failover_timeout = 120
if resume_id:
    framework.id.value = resume_id
driver = MesosSchedulerDriver(
    sched,
    framework,
    master,
    use_addict=True,
    principal="pymesos",
    secret=token or None,
)
driver.start()
sched.wait("subscription", lambda: sched.framework_id is not None)

if phase == "first":
    sched.wait("the echo task to finish", lambda: sched.seen("echo", "TASK_FINISHED"))
    sched.wait("the failing task to fail", lambda: sched.seen("fail", "TASK_FAILED"))
    sched.wait("the long task to run", lambda: sched.seen("long", "TASK_RUNNING"))
    sched.wait(
        "the oversized task to be refused",
        lambda: any(
            u["task"] == "too-big" and u["state"] in ("TASK_ERROR", "TASK_DROPPED")
            for u in sched.updates
        ),
    )

    # Explicit, then implicit reconciliation: each answers for the long task.
    driver.reconcileTasks([{"task_id": {"value": "long"}}])
    sched.wait(
        "explicit reconciliation",
        lambda: sched.seen("long", "TASK_RUNNING", "REASON_RECONCILIATION"),
    )
    before = sched.count("long", "TASK_RUNNING", "REASON_RECONCILIATION")
    driver.reconcileTasks([])
    sched.wait(
        "implicit reconciliation",
        lambda: sched.count("long", "TASK_RUNNING", "REASON_RECONCILIATION") > before,
    )

    # Offers declined for an hour come back after suppress and revive.
    driver.suppressOffers()
    with sched.cond:
        offers_before = sched.offers
    driver.reviveOffers()
    sched.wait("an offer after revive", lambda: sched.offers > offers_before)

    with sched.cond:
        result = dict(
            framework_id=sched.framework_id,
            master_version=sched.master_version,
            offers=sched.offers,
            updates=sched.updates,
        )
    driver.stop(failover=True)
    driver.join()
else:
    sched.wait("re-subscription", lambda: sched.resubscribed)
    before = sched.count("long", "TASK_RUNNING")
    driver.reconcileTasks([])
    sched.wait("the long task, still running", lambda: sched.count("long", "TASK_RUNNING") > before)
    driver.killTask({"value": "long"})
    sched.wait("the long task killed", lambda: sched.seen("long", "TASK_KILLED"))
    with sched.cond:
        result = dict(
            framework_id=sched.framework_id, reregistered=sched.resubscribed, updates=sched.updates
        )
    driver.stop()  # tears the framework down
    driver.join()

with open(f"{out_dir}/{phase}.json", "w") as f:
    json.dump(result, f)
print("ok")
