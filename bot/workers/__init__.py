"""Code that runs inside the heavy interpreters (quantize or serve environment), started by the bot as
subprocesses. Workers import only the standard library, their own heavy libraries and `bot.workers.*`,
read one job JSON and write one result JSON."""
