"""`cong run --local` output: the full log goes to a file, the terminal sees progress, user errors surface."""

import io

from pipelines.local import FilteredLog


def test_filtered_log_splits_progress_from_noise():
    log_file, terminal = io.StringIO(), io.StringIO()
    log = FilteredLog(log_file, terminal, verbose=False)
    text = (
        "12:00:00.000 - INFO - Executing task \x1b[96m'sft'\x1b[0m\n"
        '    [KFP Executor INFO]: Got executor_input:\n    {"inputs": {"parameterValues": {}}}\n'
        "    [sft] step 3/10 loss 1.2 ETA 4s\n"
        "    cong.errors.CongError: the models 'a' and 'b' do not share a tokenizer\n"
        "12:00:01.000 - ERROR - Task 'sft' finished with status FAILURE\npartial line"
    )
    for chunk in (text[:37], text[37:90], text[90:]):
        log.write(chunk)
    assert log_file.getvalue() == text
    assert terminal.getvalue().splitlines() == [
        "12:00:00.000 - INFO - Executing task 'sft'",
        "[sft] step 3/10 loss 1.2 ETA 4s",
        "12:00:01.000 - ERROR - Task 'sft' finished with status FAILURE",
    ]
    assert log.user_errors == ["the models 'a' and 'b' do not share a tokenizer"]


def test_verbose_echoes_everything():
    terminal = io.StringIO()
    log = FilteredLog(io.StringIO(), terminal, verbose=True)
    log.write("a\nb\n")
    assert terminal.getvalue() == "a\nb\n"
