"""History bounds, the job state machine driven by events and status reads, and the
account of jobs a reconnection keeps (resume.py)."""

from krita_diffusers.geometry import Rect
from krita_diffusers.history import History, layer_name
from krita_diffusers.jobs import Job, JobContext, JobStatus, PendingEvents
from krita_diffusers.protocol import Event, EventType, Task
from krita_diffusers.resume import Resumption

REGION = Rect(0, 0, 8, 8)


def add(history, job, index=0):
    return history.add(job, index, 100 + index, "a cat", Task.INPAINT, REGION, b"png")


def test_history_newest_first_and_trimmed_to_limit():
    history = History(limit=2)
    add(history, "a")
    add(history, "b")
    _, dropped = add(history, "c")
    assert [item.job_id for item in history.items] == ["c", "b"]
    assert [item.job_id for item in dropped] == ["a"]


def test_history_ignores_duplicate_result_and_removes_items():
    history = History()
    first, _ = add(history, "a")
    again, _ = add(history, "a")
    assert again is first and len(history) == 1
    assert history.remove(first.item_id) is first
    assert history.get(first.item_id) is None and len(history) == 0


def test_history_shrinking_limit_drops_oldest():
    history = History(limit=5)
    for job in "abcd":
        add(history, job)
    dropped = history.set_limit(1)
    assert [item.job_id for item in history.items] == ["d"]
    assert {item.job_id for item in dropped} == {"a", "b", "c"}


def test_layer_name_short_prompt_and_long_prompt():
    assert layer_name("  a  red\nfox ", 42) == "a red fox (seed 42)"
    long = layer_name("an extremely detailed painting of a lighthouse at dusk, oil", 7)
    assert long.endswith("… (seed 7)") and len(long) < 60
    assert layer_name("", 1) == "untitled (seed 1)"


def job():
    return Job("j1", JobContext(Task.TXT2IMG, "p", REGION))


def ev(kind, **fields):
    return Event(EventType(kind), fields.pop("job_id", "j1"), **fields)


def test_job_runs_through_events_to_finished():
    j = job()
    assert j.apply_event(ev("queued", position=2))
    assert j.describe() == "Queued (position 2)"
    j.apply_event(ev("started"))
    j.apply_event(ev("progress", step=1, total=4))
    assert j.status is JobStatus.RUNNING and j.describe() == "Step 1/4"
    j.apply_event(ev("preview", step=2, preview="..."))
    assert j.previews == 1 and j.step == 2
    j.apply_event(ev("result", index=0, seed=5, url="/v1/jobs/j1/images/0"))
    j.apply_event(ev("finished"))
    assert j.done and j.results[0].seed == 5
    # finished on the server, but not done for the artist until the pixels are here
    assert j.describe() == "Downloading results…"
    j.download_error = "connection reset"
    assert j.describe() == "Download failed: press Retry"
    j.result_fetched(0)
    assert j.download_error is None and j.describe() == "Done: 1 result"


def test_job_ignores_other_jobs_and_events_after_terminal_state():
    j = job()
    assert not j.apply_event(ev("progress", job_id="other", step=1, total=2))
    j.apply_event(ev("cancelled"))
    assert not j.apply_event(ev("progress", step=3, total=4))
    assert not j.apply_event(ev("finished"))
    assert j.status is JobStatus.CANCELLED


def test_job_failure_keeps_message():
    j = job()
    j.apply_event(ev("failed", error="Out of memory."))
    assert j.status is JobStatus.FAILED and j.error == "Out of memory."


def test_recovery_from_status_read_fills_missed_results():
    j = job()
    j.apply_event(ev("started"))
    changed = j.apply_status(
        {
            "job_id": "j1",
            "status": "finished",
            "position": 0,
            "step": 4,
            "total": 4,
            "images": [
                {"index": 0, "seed": 9, "url": "/u0"},
                {"index": 1, "seed": 10, "url": "/u1"},
            ],
            "error": None,
        }
    )
    assert changed and j.done and sorted(j.results) == [0, 1]
    assert not j.apply_status({"status": "running", "images": []})
    assert j.status is JobStatus.FINISHED


def test_a_record_after_a_restart_wins_over_what_the_plugin_last_heard():
    """A restarted server runs the job again from its first step: its record says
    queued (or step 0), and the progress bar must not go on showing step 3."""
    j = job()
    j.apply_event(ev("progress", step=3, total=4))
    assert j.apply_status({"status": "queued", "position": 2, "step": 0, "total": 0})
    assert (j.status, j.position, j.step) == (JobStatus.QUEUED, 2, 0)
    assert j.describe() == "Queued (position 2)"
    j.apply_status({"status": "running", "step": 0, "loading_model": "m"})
    assert j.describe() == "Loading m"
    assert not j.apply_status({"status": "running", "step": 0, "loading_model": "m"})


def test_resumption_names_each_unaccounted_job_once_and_only_for_its_round():
    resumption = Resumption()
    first = resumption.begin(["a", "b", "c"])
    resumption.account("b")
    resumption.account("elsewhere")  # another window's job: nothing to do
    second = resumption.begin(["a", "c", "d"])  # the stream dropped and came back
    assert resumption.unaccounted(first) == []  # a stale check names nothing
    resumption.account("c")
    assert resumption.unaccounted(second) == ["a", "d"]
    assert resumption.unaccounted(second) == []  # asked about once


def test_recovery_reports_failure_message_in_either_shape():
    j = job()
    j.apply_status(
        {"status": "failed", "error": {"code": "out_of_memory", "message": "No memory."}}
    )
    assert j.error == "No memory."


def test_pending_events_replayed_for_their_job_only_and_bounded():
    pending = PendingEvents(limit=3)
    pending.add(ev("queued", job_id="x", position=1))
    pending.add(ev("queued", job_id="y", position=1))
    pending.add(ev("started", job_id="x"))
    assert [e.type for e in pending.take("x")] == [EventType.QUEUED, EventType.STARTED]
    assert pending.take("x") == []
    for _ in range(5):
        pending.add(ev("started", job_id="z"))
    assert len(pending.take("z")) == 3


def test_started_with_loading_model_then_progress():
    j = job()
    j.apply_event(ev("started", loading_model="big.safetensors"))
    assert j.describe() == "Loading big.safetensors"
    j.apply_event(ev("progress", step=1, total=3))
    assert j.describe() == "Step 1/3"


def test_finished_event_carries_images():
    j = job()
    j.apply_event(Event(EventType.FINISHED, "j1", images=((0, 3, "/u0"),)))
    assert j.done and j.results[0].url == "/u0"
