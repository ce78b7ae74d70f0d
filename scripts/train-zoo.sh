#!/usr/bin/env bash
# Trains the model zoo on ShapeWorld, resuming whatever an earlier run (or session) left: every step below
# continues its checkpoint under runs/ when there is one, and a finished model's step is a quick no-op. Stop it
# any time (a killed run loses at most the minutes since its last checkpoint); run it again to go on.
# Usage: bash scripts/train-zoo.sh [steps to run: data vae oracle irn fopa rainnet pctnet unet]   (default: all, in that order)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh > /dev/null
freemask() { node --import tsx bin/freemask.ts "$@"; }
data=out/data
steps=("${@:-data vae oracle irn fopa rainnet pctnet unet}")
# resume when the checkpoint exists
resume() { [ -f "$1" ] && echo --resume || true; }

for step in ${steps[@]}; do
  case "$step" in
    data)
      # the zoo's training pictures: regenerated from ShapeWorld's train split (seeds 0..3999 single, 0..1999 scenes)
      mkdir -p "$data"
      [ -d "$data/train-single" ] || freemask world --split train --count 4000 --mode single --out "$data/train-single"
      [ -d "$data/train-scene" ] || freemask world --split train --count 2000 --mode scene --out "$data/train-scene" ;;
    vae)
      freemask train-diffusion --stage vae --data "$data/train-single,$data/train-scene" --out runs/shapeworld-sd --steps 1600 \
        $(resume runs/shapeworld-sd/vae/checkpoint.safetensors) ;;
    oracle)
      freemask train-segmenter --data "$data/train-scene,$data/train-single" --out runs/oracle --steps 1500 --batch 8 \
        $(resume runs/oracle/checkpoint.safetensors) ;;
    irn)
      # the instance branches read the oracle's frozen backbone
      freemask train-instances --segmenter runs/oracle --out runs/irn --steps 600 --batch 8 \
        $(resume runs/irn/checkpoint.safetensors) ;;
    fopa)
      freemask train-fopa --out runs/fopa --steps 3000 --batch 8 --size 64 --widths 16,32,64,128 \
        $(resume runs/fopa/checkpoint.safetensors) ;;
    rainnet)
      freemask train-harmonizer --model rainnet --out runs/rainnet --ngf 8 --size 256 --steps 2000 --batch 4 \
        $(resume runs/rainnet/checkpoint.safetensors) ;;
    pctnet)
      freemask train-harmonizer --model pct-net --out runs/pctnet --ch 16 --size 64 --steps 2000 --batch 8 \
        $(resume runs/pctnet/checkpoint.safetensors) ;;
    unet)
      freemask train-diffusion --stage unet --data "$data/train-single,$data/train-scene" --out runs/shapeworld-sd --steps 10000 \
        $(resume runs/shapeworld-sd/text_to_image.checkpoint.safetensors) ;;
    *) echo "train-zoo: unknown step '$step' (data vae oracle irn fopa rainnet pctnet unet)" >&2; exit 2 ;;
  esac
done
