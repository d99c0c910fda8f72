"""Celery queues, one per workload."""

from enum import StrEnum


class Queue(StrEnum):
    INFERENCE = "inference"
    TRAINING = "training"
