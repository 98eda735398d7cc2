"""Background fine-tuning jobs: the job folder is the interface between front ends and the worker.

A front end (command line, Slicer panel, a notebook) writes ``spec.json`` and starts
``python -m TransferSegLib run-job DIR``; the worker appends ``events.jsonl`` and
keeps ``state.json`` current. Nothing here imports Qt, and importing this package
does not import torch, so a GUI can poll a job from a timer at no cost.

- ``layout``: file names inside a job folder and where job folders live
- ``spec``: ``JobSpec``, the versioned ``spec.json``
- ``events``: append-only event log and its incremental reader
- ``state``: ``state.json``, written atomically
- ``processes``: is a pid alive, kill a process tree
- ``lock``: one job per device
- ``worker``: the ``run-job`` entry point
- ``launch``: how the worker process is started
- ``status``: ``JobStatus``, what a front end shows
- ``api``: ``Job``, ``start_job``, ``run_job_foreground``, ``resume_job``, ``list_jobs``
- ``follow``: following a job on a terminal
- ``ddp``: several GPUs through ``torchrun``
"""
