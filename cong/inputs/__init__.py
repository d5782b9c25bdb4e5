"""The inputs of a run: the base models, a supplied aligned weak model and the prompt sets the config names.

refs.py resolves a reference to something a task loads (`testbed:`, `hf:`, `gguf:`, `s3://`, a pinned hub model, a
path); hub.py checks hub references within seconds before anything loads them; fetch.py copies each input into the
run's store, where the DAG's importers register it (the `fetch` stage); publish.py puts the inputs that only the
machine starting a run can read (its files) into the store first, for `cong run --local` and `cong submit`.
"""
