#!/bin/bash
# Placeholder for the seed's boot script, which fetches start.sh from the internet at
# every start (so offline it starts nothing). Present only so the baseline builds.
exit 0
