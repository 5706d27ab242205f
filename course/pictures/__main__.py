"""`python -m course.pictures`: the command line of course/pictures/__init__.py."""

import sys

from course.pictures import main

sys.exit(main())
