"""The manager's web UI in a real headless browser (Debian's chromium,
driven by Selenium through chromedriver).

Usage: ui_browser.py BASE_URL TOKEN SCREENSHOT_DIR APP_ID

Logs in with the token, loads every page, checks that each shows what the
JSON API shows and that the browser logged no console errors, follows the
links from the job list to a job, a stage, an executor task and its
stderr, and saves a screenshot of each page. Prints one JSON object with
what it saw; exits non-zero on the first check that fails.
"""

import json
import os
import sys
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

BASE, TOKEN, SHOTS, APP = sys.argv[1:5]
seen = {"pages": []}


def api(path):
    req = urllib.request.Request(BASE + path, headers={"Authorization": "Bearer " + TOKEN})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def check(cond, what):
    if not cond:
        print(json.dumps(seen, indent=1))
        raise SystemExit("check failed: " + what)


def browser():
    opts = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000"):
        opts.add_argument(flag)
    opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(service=service, options=opts)


d = browser()
wait = WebDriverWait(d, 20)


def visit(name, path=None):
    """Loads a page (or takes the current one), checks the console, shoots it."""
    if path is not None:
        d.get(BASE + path)
    wait.until(ec.presence_of_element_located((By.TAG_NAME, "main")))
    errors = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
    check(not errors, f"console errors on {d.current_url}: {errors}")
    d.save_screenshot(os.path.join(SHOTS, name + ".png"))
    seen["pages"].append({"name": name, "url": d.current_url, "title": d.title})
    return d.find_element(By.TAG_NAME, "main").text


def ids_in(table_id, column=0):
    rows = d.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")
    return [r.find_elements(By.TAG_NAME, "td")[column].text for r in rows]


try:
    # Pages ask for the token first, and come back where they were asked.
    d.get(BASE + "/jobs")
    wait.until(ec.presence_of_element_located((By.ID, "token")))
    check("/login" in d.current_url, "sent to the login page: " + d.current_url)
    visit("login")
    d.find_element(By.ID, "token").send_keys(TOKEN)
    d.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait.until(ec.presence_of_element_located((By.ID, "jobs")))
    check(d.current_url.endswith("/jobs"), "back on /jobs: " + d.current_url)

    # The cluster: the agents and frameworks the API lists, ids whole.
    state = api("/api/v1/state")
    visit("cluster", "/")
    check(sorted(ids_in("agents")) == sorted(a["id"] for a in state["agents"]),
          f"agents {ids_in('agents')} vs {[a['id'] for a in state['agents']]}")
    shown_fws = set(ids_in("frameworks"))
    check(shown_fws == {f["id"] for f in state["frameworks"]}, f"frameworks {shown_fws}")
    check(d.find_element(By.ID, "leader").text == state["leader"]["id"], "the leader")

    # Tasks: every running task, and a filter by framework.
    visit("tasks", "/tasks")
    shown = set(ids_in("tasks"))
    running = {t["id"] for t in api("/api/v1/tasks")["tasks"]}
    check(running and running <= shown, f"running tasks {running} shown in {shown}")
    fw = state["frameworks"][0]["id"]
    visit("tasks-filtered", "/tasks?framework=" + fw)
    frameworks = set(ids_in("tasks", 2))
    check(frameworks <= {fw}, f"filtered by {fw}: {frameworks}")

    # Services: the app, with its instances running and healthy.
    main = visit("services", "/services")
    apps = api("/v2/apps")["apps"]
    check(any(a["id"] == APP for a in apps), "the app exists")
    check(APP in ids_in("apps"), f"{APP} in {ids_in('apps')}")
    d.find_element(By.LINK_TEXT, APP).click()
    main = visit("service-app")
    check("healthy" in main, "its instance's health is shown: " + main[:400])
    instances = ids_in("instances")
    check(len(instances) == 1, f"one instance: {instances}")

    # Jobs: the list matches the history, then job → stage → task → stderr.
    history = api("/api/v1/jobs")
    visit("jobs", "/jobs")
    shown_jobs = ids_in("jobs")
    check(shown_jobs == [j["id"] for j in history["jobs"]][:100],
          f"jobs {shown_jobs} vs {[j['id'] for j in history['jobs']]}")
    # The job with the most stages: the TPC-H query.
    job = max(history["jobs"], key=lambda j: j["stages"])
    check(job["state"] == "succeeded", f"the job succeeded: {job}")
    d.find_element(By.LINK_TEXT, job["id"]).click()
    main = visit("job")
    report = api("/api/v1/jobs/" + job["id"])
    check(len(d.find_elements(By.CSS_SELECTOR, "#stage-graph rect.stage")) == len(report["stages"]),
          "one box per stage in the graph")
    check(len(ids_in("stages")) == len(report["stages"]), "one row per stage")
    executors = ids_in("executors")
    check(executors and set(executors) == {e["id"] for e in report["executors"]},
          f"executors {executors}")
    # (Stages' plans past the third are folded: read from the source.)
    check("HashJoinExec" in d.page_source and "DataSourceExec" in d.page_source,
          "the plan's operators")
    # A stage that read another (a join's or an aggregation's).
    stage = max(report["stages"], key=lambda s: (len(s["inputs"]), s["stage"]))
    d.find_element(By.CSS_SELECTOR, f"#stages a[href$='/stages/{stage['stage']}']").click()
    main = visit("stage")
    attempts = d.find_elements(By.CSS_SELECTOR, "#attempts tbody tr")
    check(len(attempts) >= stage["partitions"], f"{len(attempts)} attempts shown")
    executor = attempts[0].find_elements(By.TAG_NAME, "td")[2].text
    attempts[0].find_element(By.CSS_SELECTOR, "td.id a").click()
    main = visit("task")
    check(executor in d.title, f"the executor's task page: {d.title}")
    d.find_element(By.ID, "stderr").click()
    main = visit("task-stderr")
    text = d.find_element(By.ID, "file").text
    check("executor attached" in text and executor in text,
          "the executor's stderr names it: " + text[:500])
    seen["job"] = job["id"]
    seen["executor"] = executor
    print(json.dumps(seen))
finally:
    d.quit()
