"""The pages built for reading runs: the run page (header, error, timeline, live refresh), the
run graph, the task page and the runs-over-time chart.

They live inside the admin (its look, its login, its permissions) but are drawn here rather
than by Django's change form, which shows a run as a column of mostly empty fieldsets. Charts
and graphs are SVG drawn on the server; the only script (``static/django_tasks/live.js``)
polls a JSON view of the run and swaps in fragments the server escaped. Nothing is loaded
from outside the project and nothing needs a JavaScript build step.
"""
