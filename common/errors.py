"""Errors a user can cause and fix. The command line prints them as one line, without a traceback."""


class UserError(Exception):
    """Something the user can fix; the message says what happened and what to do."""


class WeightsError(UserError):
    pass


class ImageError(UserError):
    pass
