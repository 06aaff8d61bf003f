"""Test support: a test PKI and local fakes of the services this machine cannot reach."""
