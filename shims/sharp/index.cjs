/**
 * Stand-in for sharp, installed through package.json "overrides".
 *
 * @huggingface/transformers imports sharp at load time in Node for image
 * models. PEFT Studio only tokenizes text and runs text models, so this
 * avoids sharp's native libvips download; decoding an image fails with a
 * sentence instead.
 */
'use strict';
module.exports = function sharp() {
  throw new Error(
    'Image decoding is not installed: PEFT Studio replaces sharp with a stand-in (package.json "overrides") because it only runs text models. ' +
      'Remove the "sharp" override and run npm install to decode images with transformers.js in Node.',
  );
};
