"""``transferseg job status|watch|cancel|resume|list``: act on background jobs by their folder.

A job started with ``transferseg finetune --detach`` or from the Slicer panel is a
folder; these commands read and act on that folder, so they work the same after
a restart or from another terminal.
"""

import json
from dataclasses import asdict
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("job", help="follow, cancel, resume, list or clean background jobs",
                       epilog="example:\n  transferseg job list\n  transferseg job clean --older-than 7")
    jobs = p.add_subparsers(dest="job_command", metavar="ACTION")

    status = jobs.add_parser("status", help="state, progress and result of a job",
                             epilog="example:\n  transferseg job status ~/.transferseg/jobs/20260101-120000-ab12cd")
    status.add_argument("job_dir", help="the job's folder (printed when the job started; 'transferseg job list')")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(func=run_status)

    watch = jobs.add_parser("watch", help="show a job's progress until it ends (Ctrl-C stops watching, not the job)",
                            epilog="example:\n  transferseg job watch jobs/liver")
    watch.add_argument("job_dir", help="the job's folder")
    watch.set_defaults(func=run_watch)

    cancel = jobs.add_parser("cancel", help="stop a job at its next iteration, keeping a checkpoint",
                             epilog="example:\n  transferseg job cancel jobs/liver")
    cancel.add_argument("job_dir", help="the job's folder")
    cancel.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for the checkpoint before killing the worker")
    cancel.set_defaults(func=run_cancel)

    resume = jobs.add_parser("resume", help="continue a cancelled or failed job from its last checkpoint",
                             epilog="example:\n  transferseg job resume jobs/liver")
    resume.add_argument("job_dir", help="the job's folder")
    resume.add_argument("--detach", action="store_true", help="return at once instead of showing progress")
    resume.set_defaults(func=run_resume)

    listing = jobs.add_parser("list", help="list jobs with their state, progress and result",
                              epilog="example:\n  transferseg job list --root jobs")
    listing.add_argument("--root", help="folder holding job folders (without it: ~/.transferseg/jobs)")
    listing.add_argument("--json", action="store_true", help="print the jobs as JSON")
    listing.set_defaults(func=run_list)

    clean = jobs.add_parser("clean", help="remove the folders of ended jobs (finished, failed, cancelled)",
                            epilog="example:\n  transferseg job clean --older-than 7 --dry-run")
    clean.add_argument("--root", help="folder holding job folders (without it: ~/.transferseg/jobs)")
    clean.add_argument("--older-than", type=float, default=None, metavar="DAYS",
                       help="only jobs whose last record is older than DAYS days (without it: every ended job)")
    clean.add_argument("--state", choices=("finished", "failed", "cancelled"), action="append",
                       help="only jobs that ended in this state (repeatable; without it: all three)")
    clean.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    clean.set_defaults(func=run_clean)

    p.set_defaults(func=lambda args: (p.print_help(), 1)[1])


def _status_dict(status) -> dict:
    data = asdict(status)
    data["directory"] = str(status.directory)
    return data


def run_status(args) -> int:
    from TransferSegLib.jobs.api import Job

    status = Job.attach(args.job_dir).status()
    if args.json:
        print(json.dumps(_status_dict(status), indent=2))
        return 0
    print(f"job      {status.directory}")
    print(f"state    {status.state}" + (f" (attempt {status.attempt})" if status.attempt > 1 else ""))
    if status.pid:
        where = "running" if status.alive else "gone" if status.alive is False else "liveness unknown from here"
        print(f"worker   pid {status.pid} on {status.host} ({where})")
    if status.device:
        print(f"device   {status.device}" + (f", peak GPU memory {status.peak_gpu_memory_gb} GB" if status.peak_gpu_memory_gb else ""))
    if status.iteration is not None:
        line = f"progress iteration {status.iteration}" + (f"/{status.total_iterations}" if status.total_iterations else "")
        if status.percent is not None:
            line += f", {status.percent:.1f}%"
        if status.loss is not None:
            line += f", loss {status.loss:.4f}"
        if status.eta_s is not None and not status.terminal:
            line += f", about {status.eta_s:.0f} s left"
        print(line)
    if status.dice:
        print("dice     " + ", ".join(f"{k} {v:.3f}" for k, v in status.dice.items()))
    if status.model:
        print(f"model    {status.model}")
    if status.message and status.state != "finished":
        print(f"message  {status.message}")
    if status.hint:
        print(f"hint     {status.hint}")
    for line in status.stderr_tail:
        print(f"  | {line}")
    return 0


def run_watch(args) -> int:
    from TransferSegLib.jobs.api import Job
    from TransferSegLib.jobs.follow import follow_job
    from TransferSegLib.progress import ProgressPrinter

    job = Job.attach(args.job_dir)
    return follow_job(job, ProgressPrinter(), cancel_on_interrupt=False)


def run_cancel(args) -> int:
    from TransferSegLib.jobs.api import Job

    job = Job.attach(args.job_dir)
    status = job.status()
    if status.terminal:
        print(f"the job has already ended ({status.state})")
        return 0
    print(f"asking the job to stop (it saves a checkpoint; up to {args.timeout:.0f} s)...")
    status = job.cancel(timeout=args.timeout)
    print(f"{status.state}: {status.message}")
    if status.state == "cancelled":
        print(f"resume it with: transferseg job resume {status.directory}")
        return 0
    return 1 if status.state != "finished" else 0


def run_resume(args) -> int:
    from TransferSegLib.jobs.api import resume_job
    from TransferSegLib.jobs.follow import follow_job
    from TransferSegLib.progress import ProgressPrinter

    job = resume_job(Path(args.job_dir))
    if args.detach:
        print(f"resumed job {job.directory} (pid {job.pid}); follow it with 'transferseg job watch {job.directory}'")
        return 0
    printer = ProgressPrinter()
    printer.note(f"resuming job {job.directory}")
    return follow_job(job, printer, cancel_on_interrupt=True)


def _progress_cell(status) -> str:
    if status.iteration is None:
        return ""
    text = f"it {status.iteration}" + (f"/{status.total_iterations}" if status.total_iterations else "")
    if status.percent is not None and not status.terminal:
        text += f" {status.percent:.0f}%"
    return text


def run_list(args) -> int:
    from TransferSegLib.commands.tables import format_table, terminal_width
    from TransferSegLib.jobs.api import list_jobs

    jobs = list_jobs(args.root)
    if args.json:
        print(json.dumps([_status_dict(s) for s in jobs], indent=2))
        return 0
    if not jobs:
        print("no jobs")
        return 0
    rows = []
    for s in jobs:
        result = s.model if s.state == "finished" and s.model else (s.message or "")
        rows.append([s.state, s.directory.name, _progress_cell(s),
                     f"{s.mean_dice:.3f}" if s.mean_dice is not None else "", s.device or "", result])
    print(format_table(["STATE", "JOB", "PROGRESS", "DICE", "DEVICE", "MODEL OR MESSAGE"], rows, terminal_width()))
    print(f"folder: {jobs[0].directory.parent}")
    return 0


def run_clean(args) -> int:
    from TransferSegLib.jobs.cleanup import TERMINAL_STATES, clean_jobs
    from TransferSegLib.paths import format_size

    removed = clean_jobs(args.root, older_than_days=args.older_than, states=tuple(args.state or TERMINAL_STATES),
                         dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for job in removed:
        print(f"{verb} {job.directory} ({job.state}, {format_size(job.bytes)})")
    total = sum(j.bytes for j in removed)
    print(f"{verb} {len(removed)} job folder(s), {format_size(total)}; running and queued jobs are never removed")
    return 0
