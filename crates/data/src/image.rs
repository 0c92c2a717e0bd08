//! PNG and JPEG files as model inputs: pixel values 0–255 in the `[channels, height, width]`
//! layout the model takes (grey for one channel, RGB for three), as IDX images are read.

use std::path::Path;

use crate::DataError;

/// Whether a file name says it is a PNG or JPEG image.
pub fn is_image(path: &Path) -> bool {
    matches!(
        path.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

/// Decoded pixels: height, width, channels per pixel and the 8-bit values, row-major.
struct Pixels {
    height: usize,
    width: usize,
    channels: usize,
    values: Vec<u8>,
}

/// Reads an image into `shape` (`[channels, height, width]` or `[height, width]`), converting
/// colour to grey or grey to colour as the model's channel count asks.
pub fn read_image(path: &Path, shape: &[usize]) -> Result<Vec<f32>, DataError> {
    let corrupt = |reason: String| DataError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let (channels, height, width) = match *shape {
        [c @ (1 | 3), h, w] => (c, h, w),
        [h, w] => (1, h, w),
        _ => {
            return Err(DataError::Mismatch {
                path: path.to_path_buf(),
                message: format!(
                    "the model takes {} per sample, not an image",
                    modelforge_spec::show_shape(shape)
                ),
                fix: "give a JSON request or a CSV row instead".into(),
            });
        }
    };
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let pixels = match bytes.starts_with(b"\x89PNG") {
        true => decode_png(&bytes).map_err(corrupt)?,
        false => decode_jpeg(&bytes).map_err(corrupt)?,
    };
    if (pixels.height, pixels.width) != (height, width) {
        return Err(DataError::Mismatch {
            path: path.to_path_buf(),
            message: format!(
                "the image is {}×{} pixels but the model takes {height}×{width}",
                pixels.width, pixels.height
            ),
            fix: format!("resize it to {width}×{height}"),
        });
    }
    let plane = height * width;
    let mut out = vec![0f32; channels * plane];
    for i in 0..plane {
        let px = &pixels.values[i * pixels.channels..(i + 1) * pixels.channels];
        // Alpha, if any, is dropped; colour averages to grey, grey repeats to colour.
        let colour = &px[..px.len().clamp(1, 3)];
        for c in 0..channels {
            out[c * plane + i] = match (channels, colour.len()) {
                (1, 3) => colour.iter().map(|&v| v as f32).sum::<f32>() / 3.0,
                (_, 3) => colour[c] as f32,
                _ => colour[0] as f32,
            };
        }
    }
    Ok(out)
}

/// A PNG's pixels, 8 bits per channel.
fn decode_png(bytes: &[u8]) -> Result<Pixels, String> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder
        .read_info()
        .map_err(|e| format!("not a readable PNG: {e}"))?;
    let size = reader
        .output_buffer_size()
        .ok_or("the PNG is too large to decode")?;
    // 64 Mi values: a larger picture is no model input.
    if size > 64 << 20 {
        return Err(format!(
            "the PNG would decode to {size} bytes, too large for a model input"
        ));
    }
    let mut values = vec![0; size];
    let frame = reader
        .next_frame(&mut values)
        .map_err(|e| format!("not a readable PNG: {e}"))?;
    values.truncate(frame.buffer_size());
    Ok(Pixels {
        height: frame.height as usize,
        width: frame.width as usize,
        channels: frame.color_type.samples(),
        values,
    })
}

/// A JPEG's pixels (grey or RGB).
fn decode_jpeg(bytes: &[u8]) -> Result<Pixels, String> {
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder
        .read_info()
        .map_err(|e| format!("neither a PNG nor a readable JPEG: {e}"))?;
    let info = decoder.info().ok_or("the JPEG has no header")?;
    let channels = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => 1,
        jpeg_decoder::PixelFormat::RGB24 => 3,
        other => {
            return Err(format!(
                "JPEG pixels of {other:?} are not supported — save it as grey or RGB"
            ));
        }
    };
    if info.width as usize * info.height as usize > 16 << 20 {
        return Err("the JPEG is too large for a model input".into());
    }
    let values = decoder
        .decode()
        .map_err(|e| format!("not a readable JPEG: {e}"))?;
    Ok(Pixels {
        height: info.height as usize,
        width: info.width as usize,
        channels,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32, colour: png::ColorType, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(colour);
        encoder.set_depth(png::BitDepth::Eight);
        encoder
            .write_header()
            .unwrap()
            .write_image_data(data)
            .unwrap();
        out
    }

    #[test]
    fn pngs_become_the_models_channels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.png");
        std::fs::write(
            &path,
            png(2, 1, png::ColorType::Rgb, &[30, 60, 90, 255, 0, 0]),
        )
        .unwrap();
        assert_eq!(read_image(&path, &[1, 1, 2]).unwrap(), vec![60.0, 85.0]);
        assert_eq!(
            read_image(&path, &[3, 1, 2]).unwrap(),
            vec![30.0, 255.0, 60.0, 0.0, 90.0, 0.0]
        );
        std::fs::write(&path, png(2, 1, png::ColorType::Grayscale, &[7, 200])).unwrap();
        assert_eq!(read_image(&path, &[1, 2]).unwrap(), vec![7.0, 200.0]);
        let e = read_image(&path, &[1, 28, 28]).unwrap_err().to_string();
        assert!(
            e.contains("2×1 pixels") && e.contains("resize it to 28×28"),
            "{e}"
        );
        std::fs::write(&path, b"\x89PNG broken").unwrap();
        assert!(matches!(
            read_image(&path, &[1, 2]),
            Err(DataError::Corrupt { .. })
        ));
        assert!(is_image(Path::new("a/B.JPG")) && !is_image(Path::new("a.csv")));
    }
}
