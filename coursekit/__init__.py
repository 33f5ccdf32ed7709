"""Runtime code shared by the lessons, the exercises and the solutions."""
