//! Thumbnails with the `image` crate (PNG, JPEG, GIF, WebP). Images come from anyone, so decoding
//! is bounded: the header's dimensions are checked against `media.max_thumbnail_pixels` before
//! any pixel is decoded, and the decoder's allocations are capped. Callers run this on the
//! blocking pool.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader, Limits, imageops::FilterType};

use crate::error::{Error, ErrorKind, Result};

/// How the thumbnail fits the requested box (the spec's two methods).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// The requested aspect ratio, cropped from the centre.
    Crop,
    /// The original aspect ratio, fitting within the box.
    Scale,
}

impl Method {
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "crop" => Ok(Self::Crop),
            "scale" => Ok(Self::Scale),
            _ => Err(Error::invalid_param("`method` must be `crop` or `scale`")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crop => "crop",
            Self::Scale => "scale",
        }
    }
}

pub struct Thumbnail {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
}

/// Whether we can make thumbnails of this content type (its essence, lower-cased).
pub fn supported(content_type: &str) -> bool {
    matches!(content_type, "image/png" | "image/jpeg" | "image/jpg" | "image/gif" | "image/webp")
}

/// A thumbnail of `bytes` at least `width`×`height` where the image allows (never upscaled), or
/// `None` when the image is no larger than asked, so that the original is the answer.
pub fn generate(bytes: &[u8], width: u32, height: u32, method: Method, max_pixels: u64) -> Result<Option<Thumbnail>> {
    let undecodable = |e: image::ImageError| Error::new(ErrorKind::Unknown, format!("Cannot decode the image: {e}"));
    let reader =
        || ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| Error::internal(e.to_string()));
    let format = reader()?.format().ok_or_else(|| Error::new(ErrorKind::Unknown, "Not an image format we read"))?;
    let (image_width, image_height) = reader()?.into_dimensions().map_err(undecodable)?;
    if u64::from(image_width) * u64::from(image_height) > max_pixels {
        return Err(Error::new(ErrorKind::TooLarge, "The image is too large to thumbnail"));
    }
    if image_width <= width && image_height <= height {
        return Ok(None);
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(image_width);
    limits.max_image_height = Some(image_height);
    // RGBA at 16 bits a channel, plus the decoder's own buffers.
    limits.max_alloc = Some(max_pixels.saturating_mul(8) + (64 << 20));
    let mut decoder = reader()?;
    decoder.limits(limits);
    let image = decoder.decode().map_err(undecodable)?;
    let thumbnail = match method {
        Method::Scale => {
            let (w, h) = fit_within(image_width, image_height, width, height);
            image.resize_exact(w, h, FilterType::Triangle)
        }
        Method::Crop if width <= image_width && height <= image_height => {
            image.resize_to_fill(width, height, FilterType::Triangle)
        }
        // Smaller than asked in one dimension: crop to the asked aspect without scaling.
        Method::Crop => {
            let (w, h) = (width.min(image_width), height.min(image_height));
            image.crop_imm((image_width - w) / 2, (image_height - h) / 2, w, h)
        }
    };
    encode(&thumbnail, format == ImageFormat::Jpeg).map(Some)
}

/// The largest size with the image's aspect ratio within `width`×`height` (as Synapse computes
/// it), never above the image's own size.
fn fit_within(image_width: u32, image_height: u32, width: u32, height: u32) -> (u32, u32) {
    let (iw, ih, w, h) = (u64::from(image_width), u64::from(image_height), u64::from(width), u64::from(height));
    let (tw, th) = if w * ih < h * iw { (w, (w * ih / iw).max(1)) } else { ((h * iw / ih).max(1), h) };
    (tw.min(iw) as u32, th.min(ih) as u32)
}

/// JPEG for JPEG sources (photos), PNG for everything else (it keeps transparency).
fn encode(image: &DynamicImage, jpeg: bool) -> Result<Thumbnail> {
    let mut out = Cursor::new(Vec::new());
    let failed = |e: image::ImageError| Error::internal(format!("encoding a thumbnail: {e}"));
    if jpeg {
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80);
        image.to_rgb8().write_with_encoder(encoder).map_err(failed)?;
        Ok(Thumbnail { bytes: out.into_inner(), content_type: "image/jpeg" })
    } else {
        image.write_to(&mut out, ImageFormat::Png).map_err(failed)?;
        Ok(Thumbnail { bytes: out.into_inner(), content_type: "image/png" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = DynamicImage::new_rgba8(width, height);
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    fn size(thumbnail: &Thumbnail) -> (u32, u32) {
        image::load_from_memory(&thumbnail.bytes).unwrap().into_rgba8().dimensions()
    }

    #[test]
    fn scale_keeps_the_aspect_ratio_and_crop_fills_the_box() {
        let image = png(200, 100);
        let scaled = generate(&image, 50, 50, Method::Scale, 1 << 20).unwrap().unwrap();
        assert_eq!((size(&scaled), scaled.content_type), ((50, 25), "image/png"));
        let cropped = generate(&image, 40, 40, Method::Crop, 1 << 20).unwrap().unwrap();
        assert_eq!(size(&cropped), (40, 40));
        let partly = generate(&image, 150, 150, Method::Crop, 1 << 20).unwrap().unwrap();
        assert_eq!(size(&partly), (150, 100));
    }

    #[test]
    fn small_images_are_not_upscaled_and_huge_ones_are_refused() {
        assert!(generate(&png(20, 10), 32, 32, Method::Scale, 1 << 20).unwrap().is_none());
        let err = generate(&png(200, 100), 32, 32, Method::Scale, 1000).err().unwrap();
        assert_eq!(err.kind(), Some(&ErrorKind::TooLarge));
        let err = generate(b"not an image at all", 32, 32, Method::Scale, 1000).err().unwrap();
        assert_eq!(err.kind(), Some(&ErrorKind::Unknown));
    }
}
