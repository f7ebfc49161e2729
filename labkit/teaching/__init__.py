"""Teaching tools: the exercises and their grader, the student edition, the course's pitfalls, the
loss comparison, the notebooks' figures and the decoding explorer."""
