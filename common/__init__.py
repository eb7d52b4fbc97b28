"""What every layer shares and none owns: the user-input error type. Imports nothing of the project."""
