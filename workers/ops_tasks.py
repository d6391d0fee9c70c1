"""The `health` remote-control command every worker answers for the operations page and its health check: its
queues, the tasks it is running, the memory it offers a training job (workers.capacity), and whether it reaches
the database and Redis (the `workers.health` task's check).

A remote-control command reaches the worker itself over the broker's broadcast channel, so a worker busy with a
long training job, or behind a long queue, still answers within a second.
"""
from celery.worker import state as worker_state
from celery.worker.control import inspect_command
from django.db import connection

from workers.capacity import capacity
from workers.health_tasks import health as health_task


@inspect_command()
def health(state, **kwargs) -> dict:
    try:
        reachable = health_task.run()
    except Exception as error:  # the answer says what failed instead of leaving the caller to time out
        reachable = {"database": False, "redis": False, "error": f"{type(error).__name__}: {error}"}
    finally:
        connection.close()  # the main process keeps no connection that a pool process forked later would share
    consumer = state.consumer.task_consumer
    return {
        **reachable,
        "queues": sorted(queue.name for queue in consumer.queues) if consumer else [],
        "capacity": capacity(),
        "active": [{"id": request.id, "task": request.task_name, "args": request.args}
                   for request in list(worker_state.active_requests)],
    }
