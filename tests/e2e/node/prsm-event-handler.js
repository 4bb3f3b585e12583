// events/prsm-event-handler.js
import { EventEmitter } from 'events';
import Redis from 'ioredis';

class PRSMEventHandler extends EventEmitter {
  constructor() {
    super();
    this.redis = new Redis(process.env.REDIS_URL);
    this.subscriber = new Redis(process.env.REDIS_URL);
    this.setupSubscriptions();
  }
  
  setupSubscriptions() {
    this.subscriber.subscribe('prsm:query:completed', 'prsm:query:failed');
    
    this.subscriber.on('message', (channel, message) => {
      try {
        const data = JSON.parse(message);
        this.handleEvent(channel, data);
      } catch (error) {
        console.error('Failed to parse event message:', error);
      }
    });
  }
  
  handleEvent(channel, data) {
    switch (channel) {
      case 'prsm:query:completed':
        this.emit('query:completed', data);
        this.updateUserMetrics(data.userId, data.usage);
        this.notifyDownstreamServices(data);
        break;
        
      case 'prsm:query:failed':
        this.emit('query:failed', data);
        this.logFailure(data);
        this.triggerFallback(data);
        break;
    }
  }
  
  async publishQueryEvent(type, data) {
    const event = {
      type,
      timestamp: new Date().toISOString(),
      correlationId: data.correlationId || this.generateCorrelationId(),
      ...data
    };
    
    await this.redis.publish(`prsm:query:${type}`, JSON.stringify(event));
  }
  
  async updateUserMetrics(userId, usage) {
    const key = `user:${userId}:metrics`;
    await this.redis.hincrby(key, 'total_queries', 1);
    await this.redis.hincrby(key, 'total_tokens', usage.tokens || 0);
    await this.redis.expire(key, 86400); // 24 hours
  }
  
  async triggerFallback(data) {
    // Trigger fallback service
    await this.redis.publish('fallback:ai:request', JSON.stringify({
      originalRequest: data.request,
      failureReason: data.error,
      correlationId: data.correlationId
    }));
  }
}

export default new PRSMEventHandler();
