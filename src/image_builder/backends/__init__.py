"""Backends run a plan: ``local`` here, ``ado`` through the trusted Azure DevOps pipeline."""
