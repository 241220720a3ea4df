"""The cron service: creates Argo Workflows from multi-schedule CronWorkflows, exactly once per scheduled time."""
