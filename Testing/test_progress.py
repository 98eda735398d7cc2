"""The terminal progress line shared by foreground fine-tuning and ``job watch``."""

import io

from TransferSegLib.progress import ProgressPrinter, format_progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_line_shows_percent_iteration_loss_dice_and_eta():
    line = format_progress({"percent": 52.5, "iteration": 21, "total_iterations": 40, "loss": 0.5625,
                            "eta_s": 81, "its_per_s": 0.9}, 0.69)
    assert "52.5%" in line and "it 21/40" in line and "loss 0.5625" in line and "val dice 0.690" in line
    assert "ETA 01:21" in line and "0.90 it/s" in line and "##########-" in line
    assert "data wait 4%" in format_progress({"percent": 1.0, "data_wait_pct": 3.8}, None)


def test_on_a_terminal_progress_rewrites_one_line_and_messages_get_their_own():
    out = Terminal()
    printer = ProgressPrinter(out)
    printer.show({"kind": "progress", "time": 1.0, "percent": 10.0, "iteration": 1})
    printer.show({"kind": "progress", "time": 2.0, "percent": 20.0, "iteration": 2})
    printer.show({"kind": "validation", "iteration": 2, "dice": {"liver": 0.8}, "mean_dice": 0.8})
    printer.show({"kind": "error", "message": "The worker was killed", "hint": "Resume it", "stderr_tail": ["boom"]})
    printer.close()
    text = out.getvalue()
    assert text.count("\r\033[K") == 2 and "validation at iteration 2: liver 0.800" in text
    assert "error: The worker was killed\n  hint: Resume it\n  | boom" in text
    assert text.endswith("\n")


def test_in_a_log_file_progress_is_thinned_out_but_the_end_is_kept():
    out = io.StringIO()
    printer = ProgressPrinter(out, min_interval_lines=10)
    for i in range(1, 26):
        printer.event("progress", percent=4.0 * i, iteration=i)
    printer.event("cancelled", message="Stopped.", hint="Resume with 'transferseg job resume J'.")
    lines = out.getvalue().splitlines()
    assert [l for l in lines if "it " in l][-1].count("it 25") == 1
    assert len([l for l in lines if "it " in l]) == 4  # 1, 11, 21 and the 100 % line
    assert "cancelled: Stopped." in out.getvalue() and "job resume J" in out.getvalue()
