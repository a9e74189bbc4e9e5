#!/bin/sh
# Makes sample.mp4, the emulator's video result: 2 s of ffmpeg's test pattern, 128x72 (16:9),
# 12 fps, H.264 (yuv420p, baseline) in MP4 with the index first (streams as it downloads).
# Run once by hand (Debian: apt-get install ffmpeg); the file it makes is committed, so neither
# the emulator nor the tests need ffmpeg.
set -eu
cd "$(dirname "$0")"
ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=128x72:rate=12:duration=2 \
    -c:v libx264 -profile:v baseline -pix_fmt yuv420p -crf 30 -g 12 -movflags +faststart \
    -map_metadata -1 -fflags +bitexact -flags:v +bitexact sample.mp4
