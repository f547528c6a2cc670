"""Test helpers shipped with tfdrop (hostile inputs for its own and downstream test suites)."""
