"""The TrainJob components: sft and dpo on several nodes, and the exit handler that deletes their jobs."""
