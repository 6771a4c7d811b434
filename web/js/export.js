// PNG export: the room's committed image as the server renders it (lossless, native resolution),
// saved under a name that says its size, and an upscaled copy made here in a canvas.

/** Fetch the native PNG at url: {blob, bitmap} (the caller closes the bitmap). */
async function fetchPng(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(`the server answered ${r.status}`);
  const blob = await r.blob();
  const bitmap = await createImageBitmap(blob);
  return { blob, bitmap };
}

/** Save a blob as a file named name (an object URL and a download link: the name is ours). */
export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/**
 * Download the image at url. factor 1: the server's PNG as it is; factor k > 1: redrawn k times
 * larger with smooth (bicubic-quality) resampling. name(w, h) makes the file name from the size
 * saved. Returns [w, h] of the saved image.
 */
export async function exportPng(url, factor, name) {
  const { blob, bitmap } = await fetchPng(url);
  try {
    if (factor <= 1) {
      saveBlob(blob, name(bitmap.width, bitmap.height));
      return [bitmap.width, bitmap.height];
    }
    const w = bitmap.width * factor;
    const h = bitmap.height * factor;
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(bitmap, 0, 0, w, h);
    const big = await new Promise((resolve, reject) => {
      canvas.toBlob((b) => (b ? resolve(b) : reject(new Error("the browser could not encode the PNG"))), "image/png");
    });
    saveBlob(big, name(w, h));
    return [w, h];
  } finally {
    bitmap.close?.();
  }
}
