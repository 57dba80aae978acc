"""Memory in a Pinecone index (``pinecone://index``)."""

from .backend import PineconeMemory

__all__ = ["PineconeMemory"]
