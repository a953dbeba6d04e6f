"""The worker: a supervisor (``runtaskworker``) and the worker processes it runs."""

from .process import TaskRunCancelled, TaskRunTimeout, Worker, worker_name
from .supervisor import Supervisor

__all__ = ["Supervisor", "TaskRunCancelled", "TaskRunTimeout", "Worker", "worker_name"]
