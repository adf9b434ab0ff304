"""Run with the tempest venv's interpreter: a subunit v2 stream on stdin, one JSON object per
test on stdout, ``{"id", "status", "detail", "seconds"}``; ``detail`` is the traceback of a
failure or the reason for a skip, ``seconds`` how long it ran (null if unknown).

Not imported by the project: subunit and testtools live in the tempest venv.
"""

import json
import sys

import subunit
import testtools


def emit(test):
    if test["status"] in ("exists", "inprogress"):
        return
    details = test["details"]
    detail = ""
    for name in ("traceback", "reason"):
        if name in details:
            detail = details[name].as_text()
            break
    start, stop = (test["timestamps"] + [None, None])[:2]
    seconds = (stop - start).total_seconds() if start and stop else None
    outcome = {"id": test["id"], "status": test["status"], "detail": detail, "seconds": seconds}
    print(json.dumps(outcome))


def main():
    case = subunit.ByteStreamToStreamResult(sys.stdin.buffer, non_subunit_name="stdout")
    result = testtools.StreamToDict(emit)
    result.startTestRun()
    try:
        case.run(result)
    finally:
        result.stopTestRun()


if __name__ == "__main__":
    main()
