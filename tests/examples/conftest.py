"""The example check files are run through pytester by test_examples.py, not collected directly."""
collect_ignore = ["user_checks"]
