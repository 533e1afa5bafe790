"""Emergency (112) calls from door panels through the city pool of caller numbers."""
