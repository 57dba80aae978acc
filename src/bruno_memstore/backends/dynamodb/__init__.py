"""DynamoDB: ``DynamoDBMemory``."""

from .backend import DynamoDBMemory

__all__ = ["DynamoDBMemory"]
