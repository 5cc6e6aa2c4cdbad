// Browsers without ES modules (and so without the runtime) get a plain message.
document.getElementById('status').textContent =
  'This browser is too old to run the model. Use a current Chrome, Safari, Firefox or Edge.';
