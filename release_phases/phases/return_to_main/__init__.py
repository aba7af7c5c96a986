"""Return to main after a hotfix release."""
