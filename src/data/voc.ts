// Pascal VOC layout: JPEGImages (PNG here), SegmentationClass and SegmentationObject as palettized PNGs with
// VOC's palette (255 = "ignore"), ImageSets/Segmentation/<split>.txt.

/** VOC's colour map: entry i spreads the bits of i over R, G, B from the most significant bit down. */
export const vocPalette: Uint8Array = (() => {
  const p = new Uint8Array(768);
  for (let i = 0; i < 256; i++) {
    let c = i, r = 0, g = 0, b = 0;
    for (let j = 0; j < 8; j++) {
      r |= (c & 1) << (7 - j);
      g |= ((c >> 1) & 1) << (7 - j);
      b |= ((c >> 2) & 1) << (7 - j);
      c >>= 3;
    }
    p.set([r, g, b], 3 * i);
  }
  return p;
})();
